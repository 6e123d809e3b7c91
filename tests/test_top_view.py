"""The frames of `evstream top` and the Prometheus text, from snapshots (evstream/top_view.py)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from evstream.top_view import lag_text, prometheus_text, rate_text, sparkline, top_view

UTC = timezone.utc
NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


def snapshot() -> dict[str, Any]:
    return {
        "now": NOW,
        "database": "shop",
        "log": {
            "events": 123456,
            "events_estimated": False,
            "newest": {"_id": "e9", "ts": NOW - timedelta(seconds=3)},
            "newest_age_seconds": 3.0,
            "rate": 42.5,
            "rate_history": [10.0, 20.0, 42.5],
        },
        "consumers": [
            {
                "kind": "watch",
                "name": "mailer",
                "part": "2/4",
                "checkpoint": "mailer part 2 of 4",
                "state": "dead",
                "position_ts": NOW - timedelta(minutes=5),
                "lag_events": 9000,
                "lag_estimated": True,
                "lag_seconds": 300.0,
                "rate": 0.0,
                "rate_history": [5.0, 0.0],
                "handled": 77,
                "retries": 3,
                "dead_letters": 4,
                "host": "box1",
                "pid": 4242,
                "seen": NOW - timedelta(seconds=45),
                "silent_seconds": 45.0,
                "dead_after_seconds": 30.0,
            },
            {
                "kind": "follow",
                "name": "sessions",
                "part": None,
                "checkpoint": "sessions",
                "state": "idle",
                "position_ts": NOW - timedelta(seconds=3),
                "lag_events": 0,
                "lag_estimated": False,
                "lag_seconds": 0.0,
                "rate": 1.5,
                "rate_history": [1.5],
                "handled": 10,
                "retries": 0,
                "dead_letters": 0,
                "host": "box2",
                "pid": 7,
                "seen": NOW - timedelta(seconds=1),
                "silent_seconds": 1.0,
                "dead_after_seconds": 30.0,
            },
        ],
        "refresh_seconds": 0.01,
    }


def render(renderable: Any, **console: Any) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=160, **console).print(renderable)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("values", "width", "expected"),
    [
        ([], 4, "    "),
        ([0, 0], 3, "   "),
        ([1, 2, 4, 8], 4, "▁▂▄█"),
        ([8, 8, 8, 8, 8, 1], 3, "██▁"),  # the newest at the right edge
    ],
)
def test_sparkline(values: list[float], width: int, expected: str) -> None:
    assert sparkline(values, width) == expected


@pytest.mark.parametrize(
    ("rate", "text"), [(None, "—"), (0, "0"), (0.44, "0.4"), (12.3, "12"), (1234.0, "1,234")]
)
def test_rate_text(rate: Any, text: str) -> None:
    assert rate_text(rate) == text


def test_lag_says_when_it_is_an_estimate() -> None:
    assert lag_text({"lag_events": 1200, "lag_estimated": True}).plain == "~1,200"
    assert lag_text({"lag_events": 1200, "lag_estimated": False}).plain == "1,200"
    assert lag_text({"lag_events": None}).plain == "—"


def test_a_frame_shows_the_log_and_each_consumer() -> None:
    text = render(top_view(snapshot(), interval=1.0, tz=UTC))
    assert "database shop" in text and "q quits" in text
    assert "123,456 events" in text and "42 events/s" in text and "newest 3 s ago" in text
    lines = text.splitlines()
    mailer = next(line for line in lines if "mailer" in line)
    assert "dead" in mailer and "2/4" in mailer and "~9,000" in mailer and "5 min" in mailer
    assert "box1:4242" in mailer and "silent 45 s" in mailer
    sessions = next(line for line in lines if "sessions" in line)
    assert "idle" in sessions and "follow" in sessions and "1.5" in sessions
    assert lines.index(mailer) < lines.index(sessions)  # as given: worst first
    assert "~ lag estimated" in text
    assert "1 dead · 1 idle" in text


def test_no_consumers_says_how_to_get_one() -> None:
    empty = {**snapshot(), "consumers": []}
    assert "no consumers yet" in render(top_view(empty))


def test_colour_follows_rich() -> None:
    coloured = render(top_view(snapshot()), force_terminal=True, color_system="standard")
    assert "\x1b[" in coloured
    plain = render(top_view(snapshot()), force_terminal=True, no_color=True)
    assert "\x1b[31m" not in plain and "\x1b[32m" not in plain


def test_prometheus_text_parses_with_the_right_values() -> None:
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(snapshot()))}
    assert families["evstream_log_events"].samples[0].value == 123456
    assert families["evstream_log_newest_event_age_seconds"].samples[0].value == 3.0
    assert families["evstream_log_append_rate"].samples[0].value == 42.5

    def value(family: str, name: str, sample: str | None = None, **labels: str) -> float:
        found = [
            s
            for s in families[family].samples
            if s.labels.get("name") == name
            and (sample is None or s.name == sample)
            and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) == 1, found
        return found[0].value

    assert value("evstream_consumer_lag_events", "mailer", part="2/4", kind="watch") == 9000
    assert value("evstream_consumer_lag_estimated", "mailer") == 1
    assert value("evstream_consumer_lag_seconds", "mailer") == 300.0
    assert value("evstream_consumer_lag_seconds", "sessions", part="") == 0.0
    assert value("evstream_consumer_dead_letters", "mailer") == 4
    assert value("evstream_consumer_up", "mailer") == 0
    assert value("evstream_consumer_up", "sessions") == 1
    assert value("evstream_consumer_rate", "sessions") == 1.5
    assert value("evstream_consumer_handled", "mailer", "evstream_consumer_handled_total") == 77
    assert value("evstream_consumer_retries", "mailer", "evstream_consumer_retries_total") == 3
    assert value("evstream_consumer_state", "mailer", state="dead") == 1
    seen = value("evstream_consumer_last_seen_timestamp_seconds", "sessions")
    assert seen == (NOW - timedelta(seconds=1)).timestamp()
    assert families["evstream_consumer_handled"].type == "counter"
    assert families["evstream_consumer_lag_events"].type == "gauge"


def test_prometheus_label_values_are_escaped() -> None:
    snap = snapshot()
    snap["consumers"][0]["name"] = 'odd "name"\\ with\nnewline'
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(snap))}
    names = {s.labels["name"] for s in families["evstream_consumer_up"].samples}
    assert 'odd "name"\\ with\nnewline' in names
