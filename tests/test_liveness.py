"""Liveness (evstream/liveness.py) and the monitor's pure parts (evstream/monitor.py): what a
consumer records, how a reader judges it, lag figures, and the thresholds of check --consumers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from evstream.errors import InvalidInput
from evstream.liveness import (
    DEAD_AFTER_BEATS,
    HEARTBEAT,
    Pulse,
    classify,
    dead_after,
    heartbeat_seconds,
    worst_first,
)
from evstream.monitor import (
    Head,
    Thresholds,
    consumer_findings,
    estimate_lag,
    lag_figures,
    parse_duration,
    parse_lag,
    plan_rows,
    split_part,
)

UTC = timezone.utc
NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def live(state: str = "running", seen_ago: float = 1.0, rate: float = 0.0, **extra: Any) -> dict:
    return {
        "state": state,
        "seen": NOW - timedelta(seconds=seen_ago),
        "every": HEARTBEAT,
        "rate": rate,
        "host": "h1",
        "pid": 42,
        **extra,
    }


class TestPulse:
    def test_a_record_says_where_and_what(self) -> None:
        clock = Clock()
        pulse = Pulse("watch", every=5.0, clock=clock, now=lambda: NOW)
        pulse.handled, pulse.retries, pulse.dead_letters = 7, 2, 1
        doc = pulse.record()
        assert doc["state"] == "running"
        assert doc["seen"] == NOW and doc["started"] == NOW
        assert doc["kind"] == "watch" and doc["every"] == 5.0
        assert isinstance(doc["host"], str) and doc["host"]
        assert isinstance(doc["pid"], int)
        assert (doc["handled"], doc["retries"], doc["dead_letters"]) == (7, 2, 1)
        assert doc["version"]

    def test_due_once_a_heartbeat(self) -> None:
        clock = Clock()
        pulse = Pulse("watch", every=5.0, clock=clock)
        assert pulse.due()
        pulse.record()
        assert not pulse.due()
        clock.t += 4.9
        assert not pulse.due()
        clock.t += 0.2
        assert pulse.due()

    def test_rate_over_the_recent_window(self) -> None:
        clock = Clock()
        pulse = Pulse("watch", every=1.0, clock=clock)
        pulse.record()
        for _ in range(5):
            clock.t += 1.0
            pulse.handled += 100
            doc = pulse.record()
        assert doc["rate"] == pytest.approx(100.0)
        for _ in range(30):  # quiet for longer than the window: the rate falls to 0
            clock.t += 1.0
            doc = pulse.record()
        assert doc["rate"] == 0.0

    def test_stopped_and_failed(self) -> None:
        pulse = Pulse("follow", every=1.0, clock=Clock())
        assert pulse.record("stopped")["state"] == "stopped"
        failed = pulse.record("failed", "boom")
        assert failed["state"] == "failed" and failed["error"] == "boom"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("", HEARTBEAT), ("0.5", 0.5), ("abc", HEARTBEAT), ("-1", HEARTBEAT), ("0", HEARTBEAT)],
    )
    def test_heartbeat_from_the_environment(self, text: str, expected: float) -> None:
        assert heartbeat_seconds({"EVSTREAM_HEARTBEAT": text}) == expected


class TestClassify:
    @pytest.mark.parametrize(
        ("liveness", "lag", "seconds", "state"),
        [
            (None, 0, 0.0, "unknown"),
            (live("stopped", seen_ago=9999), 500, 900.0, "stopped"),
            (live(seen_ago=HEARTBEAT * DEAD_AFTER_BEATS + 1), 0, 0.0, "dead"),
            (live("failed"), 0, 0.0, "dead"),
            (live(seen_ago=1, rate=0.0), 100, 60.0, "stalled"),
            (live(seen_ago=1, rate=50.0), 100, 60.0, "behind"),
            (live(seen_ago=1, rate=0.0), 100, 8.0, "behind"),  # not long enough to be stalled
            (live(seen_ago=1, rate=50.0), 3, 1.0, "live"),
            (live(seen_ago=1, rate=0.0), 0, 0.0, "idle"),
            (live(seen_ago=HEARTBEAT * DEAD_AFTER_BEATS - 1), 0, 0.0, "idle"),
        ],
    )
    def test_states(self, liveness: Any, lag: int, seconds: float, state: str) -> None:
        assert classify(liveness, now=NOW, lag_events=lag, lag_seconds=seconds) == state

    @pytest.mark.parametrize(
        ("seconds", "waiting", "state"),
        [
            (12.0, 56.0, "stalled"),  # a few events, published long ago, never handled
            (1.0, 7.0, "behind"),
            (1.0, 2.0, "idle"),  # just published: not late yet
        ],
    )
    def test_waiting_events_make_it_late(self, seconds: float, waiting: float, state: str) -> None:
        found = classify(
            live(rate=0.0), now=NOW, lag_events=5, lag_seconds=seconds, waiting=waiting
        )
        assert found == state
        caught_up = classify(live(), now=NOW, lag_events=0, lag_seconds=0.0, waiting=waiting)
        assert caught_up == "idle"

    def test_dead_after_follows_the_consumers_own_heartbeat(self) -> None:
        assert dead_after({"every": 0.5}) == 0.5 * DEAD_AFTER_BEATS
        assert dead_after({}) == HEARTBEAT * DEAD_AFTER_BEATS
        quick = live(seen_ago=4.0, every=0.5)
        assert classify(quick, now=NOW, lag_events=0, lag_seconds=0.0) == "dead"

    def test_worst_first(self) -> None:
        rows = [
            {"name": "a", "state": "idle"},
            {"name": "b", "state": "dead"},
            {"name": "c", "state": "behind", "lag_seconds": 5.0},
            {"name": "d", "state": "behind", "lag_seconds": 50.0},
            {"name": "e", "state": "stopped"},
            {"name": "f", "state": "stalled"},
            {"name": "g", "state": "live"},
        ]
        assert [r["name"] for r in worst_first(rows)] == ["b", "f", "d", "c", "g", "a", "e"]


class TestLag:
    head = Head(
        events=1000,
        newest_ts=NOW,
        newest_id="z",
        oldest_ts=NOW - timedelta(seconds=1000),
    )

    def test_counted_below_the_cap_is_exact(self) -> None:
        assert lag_figures(self.head, NOW - timedelta(seconds=30), 12, cap=100) == (
            12,
            False,
            30.0,
        )

    def test_caught_up(self) -> None:
        assert lag_figures(self.head, NOW - timedelta(seconds=30), 0) == (0, False, 0.0)

    def test_not_counted_is_estimated_from_the_time_span(self) -> None:
        lag, estimated, seconds = lag_figures(self.head, NOW - timedelta(seconds=250), None)
        assert (lag, estimated, seconds) == (250, True, 250.0)

    def test_not_counted_but_at_the_newest_ts_is_caught_up(self) -> None:
        assert lag_figures(self.head, NOW, None) == (0, False, 0.0)

    def test_at_the_cap_is_an_estimate_of_at_least_the_cap(self) -> None:
        lag, estimated, _ = lag_figures(self.head, NOW - timedelta(seconds=10), 100, cap=100)
        assert estimated and lag == 100

    def test_an_empty_log_has_no_lag(self) -> None:
        empty = Head(0, None, None, None)
        assert lag_figures(empty, None, None) == (0, False, 0.0)

    def test_estimate_bounds(self) -> None:
        assert estimate_lag(self.head, NOW) == 0
        assert estimate_lag(self.head, NOW - timedelta(days=1)) == 1000
        assert estimate_lag(self.head, NOW - timedelta(milliseconds=1)) == 1


class TestRows:
    def test_watch_parts_and_projections(self) -> None:
        watches = [
            {
                "_id": "mailer part 2 of 4",
                "collection": "events",
                "position": {"ts": NOW, "id": "e1"},
                "liveness": live(),
                "dead_letter_count": 3,
            }
        ]
        projections = [
            {
                "_id": "carts",
                "projection": "carts",
                "collection": "carts",
                "last_event_ts": NOW - timedelta(seconds=40),
                "liveness": live(position_ts=NOW - timedelta(seconds=2)),
            },
            {"_id": "sessions", "projection": "sessions", "last_event_ts": NOW},
        ]
        wanted = plan_rows(watches, projections, NOW)
        first = wanted[0]
        assert (first.row["kind"], first.row["name"], first.row["part"]) == (
            "watch",
            "mailer",
            "2/4",
        )
        assert first.row["dead_letters"] == 3 and first.ident == "e1"
        assert wanted[1].row["kind"] == "follow"
        assert wanted[1].position == NOW - timedelta(seconds=2)  # the follower's live position
        assert wanted[2].row["kind"] == "projection"

    def test_a_watch_that_showed_nothing_yet_is_where_it_started(self) -> None:
        started = NOW - timedelta(minutes=3)
        doc = {"_id": "new", "collection": "events", "position": None, "origin": started}
        (wanted,) = plan_rows([doc], [], NOW)
        assert wanted.position == started and wanted.ident is None

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("mailer", ("mailer", None)), ("a b part 3 of 8", ("a b", "3/8"))],
    )
    def test_split_part(self, text: str, expected: tuple) -> None:
        assert split_part(text) == expected


def row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "watch",
        "name": "mailer",
        "part": None,
        "checkpoint": "mailer",
        "state": "idle",
        "liveness": True,
        "silent_seconds": 1.0,
        "dead_after_seconds": 30.0,
        "host": "h1",
        "pid": 7,
        "lag_events": 0,
        "lag_seconds": 0.0,
        "lag_estimated": False,
        "dead_letters": 0,
    }
    return {**base, **over}


class TestThresholds:
    """Each threshold of check --consumers: a consumer over it is a finding, under it is not."""

    def kinds(self, rows: list[dict], **limits: Any) -> list[str]:
        return [f["kind"] for f in consumer_findings(rows, Thresholds(**limits))]

    def test_max_lag_events(self) -> None:
        behind = row(lag_events=501, lag_seconds=1.0)
        assert self.kinds([behind], max_lag_events=500) == ["lag"]
        assert self.kinds([behind], max_lag_events=501) == []

    def test_max_lag_duration(self) -> None:
        behind = row(lag_events=10, lag_seconds=301.0)
        assert self.kinds([behind]) == ["lag"]  # the default: 5 minutes
        assert self.kinds([behind], max_lag_seconds=400.0) == []
        assert self.kinds([row(lag_events=0, lag_seconds=0.0)], max_lag_seconds=0.0) == []

    def test_max_dead_letters(self) -> None:
        letters = row(dead_letters=2)
        assert self.kinds([letters]) == ["dead_letters"]  # the default: none allowed
        assert self.kinds([letters], max_dead_letters=2) == []

    def test_stale(self) -> None:
        silent = row(silent_seconds=40.0, state="dead")
        assert self.kinds([silent]) == ["stale"]  # the default: its own dead bound (30 s)
        assert self.kinds([silent], stale_seconds=60.0) == []
        assert self.kinds([row(silent_seconds=20.0)], stale_seconds=10.0) == ["stale"]

    def test_a_clean_stop_is_not_stale(self) -> None:
        assert self.kinds([row(state="stopped", silent_seconds=9999.0)]) == []

    def test_never_recorded_liveness(self) -> None:
        assert self.kinds([row(liveness=False, silent_seconds=None)]) == ["stale"]

    def test_failed(self) -> None:
        assert self.kinds([row(reported_state="failed", error="exit 6", state="dead")]) == [
            "failed"
        ]

    def test_projections_without_a_follower_are_not_consumers(self) -> None:
        cron = row(kind="projection", liveness=False, lag_events=10**6, lag_seconds=10**5)
        assert self.kinds([cron]) == []

    def test_name_picks_one(self) -> None:
        rows = [row(dead_letters=1), row(name="other", checkpoint="other", dead_letters=1)]
        found = consumer_findings(rows, Thresholds(name="other"))
        assert [f["consumer"] for f in found] == ["other"]

    def test_one_finding_per_consumer(self) -> None:
        bad = row(dead_letters=5, lag_events=10**6, lag_seconds=10**4)
        assert self.kinds([bad]) == ["dead_letters"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000", (1000, None)),
        ("10_000", (10000, None)),
        ("30s", (None, 30.0)),
        ("5m", (None, 300.0)),
        ("1.5h", (None, 5400.0)),
        ("500ms", (None, 0.5)),
    ],
)
def test_parse_lag(text: str, expected: tuple) -> None:
    assert parse_lag(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "5 parsecs", "-3", "1e3"])
def test_parse_lag_refuses(text: str) -> None:
    with pytest.raises(InvalidInput, match="--max-lag"):
        parse_lag(text)


def test_parse_duration() -> None:
    assert parse_duration("2d") == 172800.0
    assert parse_duration("2") is None
