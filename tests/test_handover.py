"""The history-then-live handover and lost history, against a change stream that behaves as
MongoDB documents it (tests/fake_changes.py): cluster times, post-batch resume tokens, slow and
empty getMores while a backlog exists, shard-key document keys, errors on cue.

Each scenario is one where the old rule (end the overlap when the stream has been quiet for
0.25 s, or at its first empty answer) shows events twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from bson import Timestamp
from fake_changes import FakeCluster, FakeStore, server_error, token

from evstream.errors import FeatureUnsupported, NotAuthorized
from evstream.storage import MongoStore, Nx27017Store
from evstream.storage.changes import Caught, LiveChange, ReadMark, stream_past_read
from evstream.watching import CheckpointLost, Hooks, Watcher, WatchOptions

UTC = timezone.utc


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Any] = []
        self.notices: list[str] = []
        self.warnings: list[str] = []

    def hooks(self) -> Hooks:
        return Hooks(self.changes.append, self.notices.append, self.warnings.append)

    def ids(self) -> list[Any]:
        return [c.doc["_id"] for c in self.changes]


class SleepClock:
    """A fake clock whose sleeps pass at once, calling `on_sleep` (writes landing meanwhile)."""

    def __init__(self, on_sleep: Any = None) -> None:
        self.now = 0.0
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self.now)


def events(prefix: str, n: int, start: datetime, step_ms: int, stream: str = "alice") -> list:
    return [
        {"_id": f"{prefix}{i:04d}", "stream": stream, "version": i + 1, "type": "login",
         "data": {"n": i}, "ts": start + timedelta(milliseconds=step_ms * i)}
        for i in range(n)
    ]  # fmt: skip


def watch(store: MongoStore, rec: Recorder, clock: Any = None, **options: Any) -> int:
    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs = {"clock": clock, "sleep": clock.sleep}
    return Watcher(store, WatchOptions(**options), rec.hooks(), **kwargs).run()


def long_read(cluster: FakeCluster) -> Any:
    """Events committed after the stream opened that a long log read also sees: their ts
    spread over 8 s, so the ledger's 4 s window alone cannot hold them all."""
    landing = events("during", 200, datetime.now(UTC), 40)

    def on_open(nth: int) -> None:
        if nth == 1:
            cluster.insert("events", landing)

    return on_open


def assert_once(rec: Recorder, expected: list[Any]) -> None:
    ids = rec.ids()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events shown twice"
    assert sorted(ids) == sorted(expected)
    assert not [w for w in rec.warnings if "shown before" in w], rec.warnings


@pytest.mark.parametrize(
    "first_getmores",
    [
        pytest.param([("slow", 0.8)], id="a slow first getMore after the read"),
        pytest.param([("empty", None), ("empty", None)], id="empty batches before the backlog"),
        pytest.param(
            [("empty", None), ("slow", 0.6), ("empty", None)], id="empty, slow, empty again"
        ),
    ],
)
def test_the_overlap_lasts_until_the_server_says_the_stream_passed_the_read(first_getmores):
    cluster = FakeCluster()
    old = events("old", 50, datetime.now(UTC) - timedelta(minutes=5), 100)
    cluster.insert("events", old)
    store = FakeStore(cluster, [list(first_getmores)], on_open=long_read(cluster))
    rec = Recorder()
    watch(store, rec, start="start", idle_timeout=1.5)
    assert_once(rec, [d["_id"] for d in old] + [f"during{i:04d}" for i in range(200)])


def test_after_the_handover_live_events_still_show_once():
    cluster = FakeCluster()
    live = events("live", 30, datetime.now(UTC) + timedelta(seconds=9), 10)
    plan = [("slow", 0.5), "normal", ("do", lambda: cluster.insert("events", live))]
    store = FakeStore(cluster, [plan], on_open=long_read(cluster))
    rec = Recorder()
    watch(store, rec, start="start", idle_timeout=1.5)
    assert_once(rec, [f"during{i:04d}" for i in range(200)] + [d["_id"] for d in live])


def test_handover_rule_uses_cluster_times_where_the_server_gives_them():
    mark = ReadMark(Timestamp(100, 5), local=10.0)
    assert not stream_past_read(mark, Caught(Timestamp(100, 4), asked_at=11.0))  # behind
    assert stream_past_read(mark, Caught(Timestamp(100, 5), asked_at=11.0))
    assert not stream_past_read(mark, LiveChange("insert", {}, {}, None, None, Timestamp(100, 5)))
    assert stream_past_read(mark, LiveChange("insert", {}, {}, None, None, Timestamp(100, 6)))
    # no cluster times (nx-27017): an empty answer to a getMore sent after the read
    bare = ReadMark(None, local=10.0)
    assert not stream_past_read(bare, Caught(None, asked_at=9.0))
    assert stream_past_read(bare, Caught(None, asked_at=10.0))
    assert not stream_past_read(bare, LiveChange("insert", {}, {}, None, None, None))


def test_resume_tokens_tell_their_cluster_time_on_mongodb_only():
    at = Timestamp(1741186978, 25)
    mongo = FakeStore()
    assert mongo.token_time(token(at)) == at
    real = {"_data": "8267C867A2000000192B042C0100296E5A1004D3284E04D8914467A216020181"}
    assert mongo.token_time(real) == at  # a token MongoDB 8 gave, with that clusterTime
    assert mongo.token_time({"_data": "nx:5"}) is None
    nx = Nx27017Store(None, None, "mongodb://nx", True, "nx")  # type: ignore[arg-type]
    assert nx.token_time(token(at)) is None
    assert nx.change_time({"clusterTime": at}) is None


# --- lost change history -------------------------------------------------------------------------


@pytest.mark.parametrize("code", [286, 260, 280, 136, 40576])
def test_a_log_watch_reads_the_log_again_when_the_change_history_is_lost(code):
    cluster = FakeCluster()
    start = datetime.now(UTC)
    first = events("a", 10, start - timedelta(seconds=30), 100)
    meanwhile = events("b", 5, start, 100)
    later = events("c", 5, start + timedelta(seconds=1), 100)
    cluster.insert("events", first)

    def on_open(nth: int) -> None:
        if nth == 2:  # landed while the history was lost: in the log and the new stream
            cluster.insert("events", meanwhile)

    plan2 = ["normal", ("do", lambda: cluster.insert("events", later))]
    store = FakeStore(cluster, [[server_error(code)], plan2], on_open=on_open)
    rec = Recorder()
    watch(store, rec, start="start", checkpoint="cp", idle_timeout=1.0)
    assert_once(rec, [d["_id"] for d in first + meanwhile + later])
    (notice,) = [n for n in rec.notices if "change history" in n]
    assert "reading the log from" in notice
    assert len(store.opened) == 2


def test_other_collections_still_stop_when_their_history_is_lost():
    store = FakeStore(script=[[server_error(286)]])
    with pytest.raises(CheckpointLost, match="ChangeStreamHistoryLost"):
        watch(store, Recorder(), collection="sessions", idle_timeout=5)


def test_unauthorized_and_index_conflicts_are_errors_not_outages():
    with pytest.raises(NotAuthorized, match="not authorised"):
        watch(FakeStore(script=[server_error(13)]), Recorder(), idle_timeout=5)
    with pytest.raises(FeatureUnsupported, match="index"):
        watch(FakeStore(script=[server_error(85)]), Recorder(), idle_timeout=5)


def test_a_resumable_error_label_is_ridden_out():
    clock = SleepClock()
    store = FakeStore(script=[[server_error(91, "ResumableChangeStreamError")], []])
    rec = Recorder()
    store.cluster.insert("events", events("a", 3, datetime.now(UTC), 10))
    watch(store, rec, clock, start="start", idle_timeout=30)
    assert any("lost the connection" in n for n in rec.notices)
    assert any(n.startswith("reconnected") for n in rec.notices)
    assert rec.ids() == ["a0000", "a0001", "a0002"]


# --- sharded logs ----------------------------------------------------------------------------


def test_on_a_sharded_log_live_and_replayed_keys_have_one_shape_and_ids_may_repeat():
    cluster = FakeCluster(shard_key=("stream",))
    now = datetime.now(UTC)
    # the same _id in two streams: two shards each keep it unique, MongoDB not across them
    replayed = [*events("e", 1, now, 1, "alice"), *events("e", 1, now, 1, "bob")]
    live = [*events("e", 1, now + timedelta(seconds=1), 1, "carol")]
    cluster.insert("events", replayed)
    store = FakeStore(cluster, [[("do", lambda: cluster.insert("events", live))]])
    rec = Recorder()
    watch(store, rec, start="start", idle_timeout=1.0)
    assert [(c.key, c.doc["stream"]) for c in rec.changes] == [
        ({"stream": "alice", "_id": "e0000"}, "alice"),
        ({"stream": "bob", "_id": "e0000"}, "bob"),
        ({"stream": "carol", "_id": "e0000"}, "carol"),
    ]
    assert [list(c.key) for c in rec.changes] == [["stream", "_id"]] * 3


# --- following by polling --------------------------------------------------------------------


def test_polling_shows_an_event_that_lands_below_what_was_shown():
    cluster = FakeCluster()
    now = datetime.now(UTC)
    cluster.insert("events", events("a", 100, now - timedelta(seconds=20), 200))
    late = events("late", 1, now - timedelta(seconds=15), 1)  # older than the window by far
    fresh = events("b", 2, now, 10)
    landed: list[str] = []

    def on_sleep(at: float) -> None:
        if at > 2 and "late" not in landed:
            landed.append("late")
            cluster.insert("events", late + fresh)

    store = FakeStore(cluster, [server_error(40573)])
    rec = Recorder()
    watch(store, rec, SleepClock(on_sleep), start="start", checkpoint="p", idle_timeout=10)
    ids = rec.ids()
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted([f"a{i:04d}" for i in range(100)] + ["late0000", "b0000", "b0001"])
    assert any("late0000" in w and "may have been shown before" in w for w in rec.warnings)
    # and the checkpoint knows it: a restart shows nothing again
    again = Recorder()
    store.script[:] = [server_error(40573)]
    watch(store, again, SleepClock(), checkpoint="p", idle_timeout=3)
    assert again.ids() == []


class NoClusterTimes(FakeStore):
    """A server like nx-27017: no operation times, tokens without a time (its getMore answers
    at once with everything it has, so an empty answer after the read is the server's word)."""

    def operation_time(self, session: Any) -> Timestamp | None:
        return None

    def token_time(self, token: Any) -> Timestamp | None:
        return None

    def change_time(self, change: Any) -> Timestamp | None:
        return None


def test_without_cluster_times_the_first_empty_answer_after_the_read_ends_the_overlap():
    cluster = FakeCluster()
    store = NoClusterTimes(cluster, [[("slow", 0.8)]], on_open=long_read(cluster))
    rec = Recorder()
    watch(store, rec, start="start", idle_timeout=1.5)
    assert_once(rec, [f"during{i:04d}" for i in range(200)])
    assert store.opened[0].getmores >= 2  # the backlog, then the empty answer that ended it
