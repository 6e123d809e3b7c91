"""Unit tests of watch: rendering, the ledger's handover and checkpoint logic, small parsers.

The ledger tests simulate a log: publishers whose `ts` lags the commit by up to the margin,
a change stream that delivers commits in order, and a log read that races with writers.
"""

from __future__ import annotations

import io
import json
import random
import re
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId, json_util
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from evstream.errors import InvalidInput
from evstream.events import has_secret, is_secret_key
from evstream.output import (
    Output,
    json_line,
    masked,
    watch_line,
    watch_record,
)
from evstream.storage import Nx27017Store
from evstream.watching import (
    MARGIN,
    PACE_MAX,
    PACE_MIN,
    Ledger,
    WatchOptions,
    change_match,
    check_ops,
    id_key,
    idle_pause,
    parse_start,
    poll_pause,
)

UTC = timezone.utc
T = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def event(n: int, ts: datetime, **fields):
    return {
        "_id": f"id-{n:05d}",
        "stream": fields.pop("stream", "alice"),
        "version": fields.pop("version", n),
        "type": fields.pop("type", "login"),
        "data": fields.pop("data", {"username": "alice"}),
        "ts": ts,
        **fields,
    }


def render(text, width=80, **console):
    buf = io.StringIO()
    Console(file=buf, width=width, soft_wrap=True, **console).print(text)
    return buf.getvalue()


# --- rendering -----------------------------------------------------------------------------------


def test_event_line_shows_time_op_type_stream_version_and_data():
    doc = event(3, T, type="login", stream="alice", version=3, data={"method": "sso"})
    line = render(watch_line("insert", "events", {"_id": doc["_id"]}, doc, T))
    local = T.astimezone().strftime("%Y-%m-%d %H:%M:%S.000")  # not today: with its date
    # The log is only ever inserted into: no operation; type and stream in padded columns.
    assert line == f'{local} login           alice@3    {{method: "sso"}}\n'


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_lines_fit_the_width(width):
    doc = event(1, T, data={"text": "x" * 300, "more": list(range(50))})
    for line in (
        watch_line("insert", "events", {"_id": doc["_id"]}, doc, T, width=width),
        watch_line(
            "update", "sessions", {"_id": "alice"}, {"_id": "alice", "n": "y" * 300}, T, width=width
        ),
    ):
        printed = render(line, width=width).rstrip("\n")
        assert "\n" not in printed
        assert len(printed) == width
        assert printed.endswith("…")


@pytest.mark.parametrize(
    "data, shown, hidden",
    [
        ({"password": "hunter2", "user": "al"}, '"****"', "hunter2"),
        ({"nested": {"api_key": "k-123"}}, '"****"', "k-123"),
        ({"headers": [{"Authorization": "Bearer abc"}]}, '"****"', "Bearer abc"),
    ],
)
def test_secrets_are_masked_unless_asked(data, shown, hidden):
    doc = event(1, T, data=data)
    masked_line = render(watch_line("insert", "events", {"_id": "x"}, doc, T, width=200), 200)
    assert shown in masked_line and hidden not in masked_line
    plain = render(
        watch_line("insert", "events", {"_id": "x"}, doc, T, show_secrets=True, width=200), 200
    )
    assert hidden in plain
    record = watch_record("insert", "events", {"_id": "x"}, doc)
    assert hidden not in json_line(record)
    assert hidden in json_line(
        watch_record("insert", "events", {"_id": "x"}, doc, show_secrets=True)
    )
    assert doc["data"] == data  # masking copies; the document itself is untouched


def test_other_collections_show_key_and_document_without_id():
    line = render(
        watch_line(
            "update",
            "sessions",
            {"_id": "alice"},
            {"_id": "alice", "status": "active", "token": "t0k3n", "events": 3},
            T,
        )
    )
    local = T.astimezone().strftime("%Y-%m-%d %H:%M:%S.000")
    assert (
        line == f'{local} update  sessions alice {{status: "active", token: "****", events: 3}}\n'
    )


def test_delete_shows_the_key_and_no_document():
    oid = ObjectId("65f000000000000000000001")
    line = render(watch_line("delete", "sessions", {"_id": oid}, None, None))
    assert line.startswith("--:--:--.--- delete  sessions ")
    assert "65f000000000000000000001" in line
    record = watch_record("delete", "sessions", {"_id": oid}, None)
    assert json.loads(json_line(record)) == {
        "op": "delete",
        "collection": "sessions",
        "key": {"_id": {"$oid": "65f000000000000000000001"}},
        "doc": None,
    }


def test_json_line_is_relaxed_extended_json_of_the_stored_event():
    doc = event(7, T, meta={"source": "test"})
    line = json_line(watch_record("insert", "events", {"_id": doc["_id"]}, doc))
    parsed = json.loads(line)
    assert list(parsed) == ["op", "collection", "key", "doc"]
    assert parsed["doc"]["ts"] == {"$date": "2024-05-01T10:00:00Z"}
    back = json_util.loads(
        line, json_options=json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=UTC)
    )
    assert back["doc"] == doc


def test_colour_follows_the_terminal_and_no_color(monkeypatch):
    doc = event(1, T)
    line = watch_line("insert", "events", {"_id": "x"}, doc, T)
    assert "\x1b[" in render(line, force_terminal=True, color_system="standard")
    assert "\x1b[" not in render(line)  # not a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    Output("pretty", stdout=out).out.print(line)
    # NO_COLOR: no colour codes even if a terminal asked for them
    assert not re.search(r"\x1b\[(3\d|9\d)", out.getvalue())
    forced = io.StringIO()
    Console(file=forced, force_terminal=True).print(line)
    assert not re.search(r"\x1b\[(3\d|9\d)", forced.getvalue())


# --- small parsers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, "now"),
        ("now", "now"),
        ("START", "start"),
        ("2024-05-01T10:00:00Z", T),
        ("2024-05-01T12:00:00+02:00", T),
        ("2024-05-01T10:00:00.250Z", T + timedelta(milliseconds=250)),
    ],
)
def test_parse_start(text, expected):
    assert parse_start(text) == expected


def test_parse_start_without_offset_is_local_time():
    local = timezone(timedelta(hours=-5))
    assert parse_start("2024-05-01T05:00:00", local=local) == T


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "", "10 minutes ago"])
def test_parse_start_rejects(text):
    with pytest.raises(InvalidInput, match="--from"):
        parse_start(text)


def test_check_ops():
    assert check_ops(["Insert", "delete"]) == ["insert", "delete"]
    with pytest.raises(InvalidInput, match="--op 'upsert'"):
        check_ops(["upsert"])


def test_change_match_goes_to_the_server_as_in_conditions():
    options = WatchOptions(types=["login"], streams=["alice", "bob"], ops=["insert"])
    assert change_match(options) == {
        "operationType": {"$in": ["insert"]},
        "fullDocument.type": {"$in": ["login"]},
        "fullDocument.stream": {"$in": ["alice", "bob"]},
    }
    assert change_match(WatchOptions()) == {}


def test_pacing_is_bounded_and_grows_with_quiet_time():
    assert idle_pause(0) == PACE_MIN
    assert idle_pause(0.02) == pytest.approx(0.002)
    assert idle_pause(3600) == PACE_MAX
    assert poll_pause(0) > 0 and poll_pause(3600) <= 1.0


def test_nx27017_full_document_gets_its_bson_types_back():
    raw = {
        "_id": "e1",
        "ts": {"$date": "2024-05-01T10:00:00.123000"},
        "data": {
            "at": {"$date": "2024-05-01T10:00:00Z"},
            "ref": {"__neosqlite_objectid__": True, "id": "65f000000000000000000001"},
            "list": [{"$date": 1714557600000}, 1, "x"],
        },
    }
    nx = Nx27017Store(None, None, "mongodb://nx", True, "nx")  # type: ignore[arg-type]
    doc = nx.change_document({"fullDocument": raw})
    assert doc == {
        "_id": "e1",
        "ts": T + timedelta(milliseconds=123),
        "data": {
            "at": T,
            "ref": ObjectId("65f000000000000000000001"),
            "list": [T, 1, "x"],
        },
    }
    assert nx.change_key({"documentKey": {"_id": "junk"}}, {"_id": 5}) == {"_id": 5}


def test_id_key_orders_like_bson_and_is_hashable():
    keys = [id_key(v) for v in (3, "a", {"x": 1}, ObjectId(), True, T)]
    assert keys == sorted(keys)
    assert len(set(keys)) == 6


# --- the ledger ---------------------------------------------------------------------------------


def test_read_and_stream_overlap_is_shown_once():
    ledger = Ledger()
    opened = T
    ledger.start_overlap(opened)
    a, b, c = (event(i, T + timedelta(milliseconds=i)) for i in range(3))
    assert [ledger.admit_read(d) for d in (a, b)] == [True, True]
    # b was committed after the stream opened: the stream has it too
    assert ledger.admit_live(b) == "seen"
    assert ledger.admit_live(c) == "new"
    assert ledger.admit_live(c) == "seen"


def test_window_stays_bounded_while_live():
    ledger = Ledger()
    for i in range(20_000):
        assert ledger.admit_live(event(i, T + timedelta(milliseconds=10 * i))) == "new"
    # 4 s of events at 100/s, plus at most one trimming batch
    assert len(ledger) <= 400 + 256
    assert ledger.settled is not None
    assert ledger.knows(event(5, T + timedelta(milliseconds=50)))


def test_overlap_floor_keeps_ids_until_the_stream_is_caught_up():
    ledger = Ledger()
    ledger.start_overlap(T)
    # a long read: 60 s of events committed during it, all read
    docs = [event(i, T + timedelta(milliseconds=100 * i)) for i in range(600)]
    for d in docs:
        assert ledger.admit_read(d)
    # every one of them may still come from the stream, and must be dropped
    assert all(ledger.admit_live(d) == "seen" for d in docs)
    ledger.end_overlap()
    assert len(ledger) < 600


def test_an_event_older_than_the_margin_is_shown_as_late_not_dropped():
    ledger = Ledger()
    for i in range(1000):
        ledger.admit_live(event(i, T + timedelta(milliseconds=10 * i)))
    old = event(99_999, T - timedelta(minutes=5))
    assert ledger.admit_live(old) == "late"


def test_snapshot_round_trip_keeps_what_was_shown():
    ledger = Ledger(origin=T - MARGIN)
    docs = [event(i, T + timedelta(milliseconds=20 * i)) for i in range(1000)]
    for d in docs:
        ledger.admit_live(d)
    saved = ledger.snapshot()
    assert saved["position"] == {"ts": docs[-1]["ts"], "id": docs[-1]["_id"]}
    assert len(saved["recent"]) <= 200 + 64  # the 4 s window at 50/s, trimmed every 64 adds
    back = Ledger.from_snapshot(saved)
    assert all(back.knows(d) for d in docs)
    assert not back.knows(event(5000, docs[-1]["ts"]))
    assert back.read_from() == saved["settled"]["ts"]


# --- simulated logs ------------------------------------------------------------------------------


class SimLog:
    """Events with commit times; each `ts` lags its commit by less than the margin."""

    def __init__(self, rng: random.Random, n: int, max_gap_ms: int, dense: bool):
        self.events = []
        commit = T
        for i in range(n):
            commit += timedelta(milliseconds=rng.randint(0 if dense else 1, max_gap_ms))
            lag = timedelta(milliseconds=rng.randint(0, int(MARGIN.total_seconds() * 1000) - 1))
            doc = event(i, commit - lag, stream=f"s{rng.randint(0, 3)}")
            # commit times strictly increase (ties broken by order)
            self.events.append((commit + timedelta(microseconds=i), doc))

    def read(self, rng, opened, ended, lower):
        """A log read during [opened, ended]: all committed before it opened, some racing."""
        docs = [d for c, d in self.events if c <= opened or (c <= ended and rng.random() < 0.5)]
        docs = [d for d in docs if lower is None or d["ts"] >= lower]
        order = {d["_id"]: i for i, (_, d) in enumerate(self.events)}
        return sorted(docs, key=lambda d: (d["ts"], order[d["_id"]]))


def run_session(ledger, log, rng, opened, read_ended, until, shown, *, read=True, stop_after=None):
    """One watch session as the Watcher runs it; returns False when stopped by stop_after."""

    def show(d):
        shown.append(d["_id"])
        return stop_after is not None and len(shown) >= stop_after

    if read:
        ledger.start_overlap(opened)
        for d in log.read(rng, opened, read_ended, ledger.read_from()):
            if ledger.admit_read(d) and show(d):
                return False
    for c, d in [(c, d) for c, d in log.events if opened < c <= until]:
        # Following starts when the read ends; the server can say the stream has passed the
        # read (an empty batch, a post-batch token beyond it) only once it delivered everything
        # committed before the read ended.
        if read and c > read_ended and rng.random() < 0.3:
            ledger.end_overlap()
        verdict = ledger.admit_live(d)
        assert verdict != "late", "the margin holds in this simulation"
        if verdict == "new" and show(d):
            return False
    return True


sim = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@sim
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(1, 400),
    max_gap_ms=st.sampled_from([1, 5, 50, 500]),
    dense=st.booleans(),
)
def test_from_start_with_concurrent_writers_shows_every_event_once(seed, n, max_gap_ms, dense):
    rng = random.Random(seed)
    log = SimLog(rng, n, max_gap_ms, dense)
    commits = [c for c, _ in log.events]
    opened = rng.choice(commits) - timedelta(microseconds=1) if rng.random() < 0.9 else commits[-1]
    read_ended = opened + timedelta(milliseconds=rng.randint(0, 5000))
    shown: list[str] = []
    run_session(Ledger(origin=None), log, rng, opened, read_ended, commits[-1], shown)
    assert sorted(shown) == sorted(d["_id"] for _, d in log.events)
    assert len(shown) == len(set(shown))


@sim
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 400),
    max_gap_ms=st.sampled_from([1, 5, 50, 500]),
    dense=st.booleans(),
    restart_gap_ms=st.sampled_from([0, 10, 1000, 60_000]),
)
def test_kill_and_restart_from_the_snapshot_loses_and_repeats_nothing(
    seed, n, max_gap_ms, dense, restart_gap_ms
):
    rng = random.Random(seed)
    log = SimLog(rng, n, max_gap_ms, dense)
    commits = [c for c, _ in log.events]
    opened = commits[0] - timedelta(seconds=1)
    kill_at = rng.randint(1, n)
    before: list[str] = []
    ledger = Ledger(origin=opened - MARGIN)
    finished = run_session(
        ledger, log, rng, opened, opened, commits[-1], before, read=False, stop_after=kill_at
    )
    assert not finished or len(before) == n
    saved = ledger.snapshot()  # saved after every printed change
    # the restart: everything committed by the kill, or while it was down, is in the log
    killed_at = commits[min(kill_at, n) - 1]
    restarted = killed_at + timedelta(milliseconds=restart_gap_ms)
    # writers kept going while it was down; the ones after `restarted` arrive live
    after: list[str] = []
    back = Ledger.from_snapshot(json_util.loads(json_util.dumps(saved)))
    run_session(
        back, log, rng, restarted, restarted + timedelta(milliseconds=20), commits[-1], after
    )
    assert sorted(before + after) == sorted(d["_id"] for _, d in log.events)
    assert not set(before) & set(after)
    assert len(after) == len(set(after))


# --- the fast paths agree with the reference implementations ------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=2))]),
    )
    | st.builds(ObjectId),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "password", "api_key", "Token", "n", "data", "x-auth-token"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_json_line_is_json_util_byte_for_byte(doc):
    record = watch_record("insert", "events", {"_id": "x"}, doc, show_secrets=True)
    assert json_line(record) == json_util.dumps(
        record, json_options=json_util.RELAXED_JSON_OPTIONS, ensure_ascii=False
    )


@settings(max_examples=300, deadline=None)
@given(doc=json_values)
def test_cached_secret_check_agrees_with_a_plain_walk(doc):
    def plain(value):
        if isinstance(value, dict):
            return any(
                (isinstance(k, str) and is_secret_key(k) and v not in (None, "")) or plain(v)
                for k, v in value.items()
            )
        if isinstance(value, list):
            return any(plain(item) for item in value)
        return False

    assert has_secret(doc) == plain(doc)
    masked_record = watch_record("insert", "events", {"_id": "x"}, {"d": doc})
    assert masked_record["doc"] == masked({"d": doc}, False)
