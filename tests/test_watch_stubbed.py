"""Watch against servers that nx-27017 cannot play: no change streams, lost history, flaky links.

The store is a MongoStore over mongomock (faithful for the log reads and checkpoint writes
used here) whose change streams are scripted (tests/fake_changes.py): it raises what a real
server would, or hands out a fake change stream.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import fake_changes
import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from evstream.errors import ExitCode, FeatureUnsupported
from evstream.watching import (
    PACE_MAX,
    PACE_MIN,
    CheckpointLost,
    CollectionGone,
    Hooks,
    Watcher,
    WatchOptions,
    list_checkpoints,
)

UTC = timezone.utc


class FakeStream:
    """A change stream: hands out scripted changes, then None (an empty getMore)."""

    def __init__(self, changes: list[Any]) -> None:
        self.changes = list(changes)
        self.resume_token: Any = {"_data": "start"}
        self.alive = True

    def try_next(self) -> Any:
        if not self.changes:
            return None
        item = self.changes.pop(0)
        if isinstance(item, Exception):
            raise item
        self.resume_token = item["_id"]
        return item

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def FakeStore(script: list[Any] | None = None) -> Any:  # noqa: N802 - reads like a class
    """The strict fake's store, with scripted streams (each a FakeStream or an error)."""
    return fake_changes.FakeStore(script=script if script is not None else [])


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Any] = []
        self.notices: list[str] = []
        self.warnings: list[str] = []

    def hooks(self) -> Hooks:
        return Hooks(self.changes.append, self.notices.append, self.warnings.append)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def stored(n: int, stream: str = "alice") -> list[dict[str, Any]]:
    base = datetime(2024, 5, 1, tzinfo=UTC)
    return [
        {
            "_id": f"{stream}-{i}",
            "stream": stream,
            "version": i + 1,
            "type": "login",
            "data": {},
            "ts": base + timedelta(seconds=i),
        }
        for i in range(n)
    ]


def no_change_streams() -> OperationFailure:
    return OperationFailure("The $changeStream stage is only supported on replica sets", code=40573)


def run(store: FakeStore, rec: Recorder, clock: FakeClock | None = None, **options: Any) -> int:
    clock = clock or FakeClock()
    watcher = Watcher(
        store,  # type: ignore[arg-type]
        WatchOptions(**options),
        rec.hooks(),
        clock=clock,
        sleep=clock.sleep,
    )
    return watcher.run()


def test_events_on_a_standalone_server_are_followed_by_polling():
    store = FakeStore([no_change_streams()])
    store.events.insert_many(stored(3))
    rec = Recorder()
    assert run(store, rec, start="start", checkpoint="cp", idle_timeout=5) == 3
    assert [c.doc["_id"] for c in rec.changes] == ["alice-0", "alice-1", "alice-2"]
    assert any("no change streams" in n and "polling" in n for n in rec.notices)
    # the checkpoint continues on the next run: only the new event
    store.events.insert_many(stored(1, "bob"))
    again = Recorder()
    store.script[:] = [no_change_streams()]
    assert run(store, again, checkpoint="cp", idle_timeout=5) == 1
    assert again.changes[0].doc["_id"] == "bob-0"


def test_other_collections_on_a_standalone_server_exit_4_with_the_fix():
    store = FakeStore([no_change_streams()])
    with pytest.raises(FeatureUnsupported) as info:
        run(store, Recorder(), collection="sessions")
    assert info.value.exit_code == ExitCode.UNSUPPORTED
    assert "replica set" in info.value.line() and "rs.initiate()" in info.value.line()


def change(n: int, op: str = "insert", doc: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "_id": {"_data": f"tok{n}"},
        "operationType": op,
        "documentKey": {"_id": f"k{n}"},
        "fullDocument": doc if doc is not None else {"_id": f"k{n}", "n": n},
        "wallTime": datetime(2024, 5, 1, tzinfo=UTC),
        **extra,
    }


def test_a_token_the_server_no_longer_has_stops_with_how_to_recover():
    store = FakeStore([FakeStream([change(1)])])
    rec = Recorder()
    assert run(store, rec, collection="sessions", checkpoint="s", limit=1) == 1
    (row,) = list_checkpoints(store)  # type: ignore[arg-type]
    assert row["collection"] == "sessions" and row["behind"] is None
    assert store.db.evstream_checkpoints.find_one({"_id": "s"})["token"] == {"_data": "tok1"}
    store.script[:] = [OperationFailure("resume point no longer in the oplog", code=286)]
    with pytest.raises(CheckpointLost) as info:
        run(store, Recorder(), collection="sessions", checkpoint="s")
    line = info.value.line()
    assert "can no longer resume checkpoint 's'" in line
    assert "ChangeStreamHistoryLost" in line and "--reset-checkpoint" in line
    assert info.value.exit_code != 0
    assert store.calls[-1]["resume_after"] == {"_data": "tok1"}


def test_lost_connections_are_ridden_out_with_one_notice_and_backoff():
    clock = FakeClock()
    store = FakeStore(
        [
            FakeStream([change(1), AutoReconnect("connection reset")]),
            AutoReconnect("connection refused"),
            AutoReconnect("connection refused"),
            FakeStream([change(2)]),
        ]
    )
    rec = Recorder()
    assert run(store, rec, clock, collection="sessions", checkpoint="s", limit=2) == 2
    assert [c.key for c in rec.changes] == [{"_id": "k1"}, {"_id": "k2"}]
    lost = [n for n in rec.notices if "lost the connection" in n]
    assert len(lost) == 1 and "connection reset" in lost[0]
    assert any(n.startswith("reconnected after") for n in rec.notices)
    # resumed from the last change's token each time, after waits that grow
    assert [c.get("resume_after") for c in store.calls[1:]] == [{"_data": "tok1"}] * 3
    assert clock.now > 0.5


def test_invalidating_events_end_the_watch():
    for op, extra, says in [
        ("drop", {}, "'sessions' was dropped"),
        ("rename", {"to": {"db": "evstream", "coll": "old"}}, "renamed to 'old'"),
        ("dropDatabase", {}, "database holding 'sessions' was dropped"),
    ]:
        store = FakeStore([FakeStream([change(1), change(2, op, **extra)])])
        rec = Recorder()
        with pytest.raises(CollectionGone, match=says):
            run(store, rec, collection="sessions")
        assert len(rec.changes) == 1


def test_delete_has_no_document_and_replace_keeps_its_name():
    store = FakeStore([FakeStream([change(1, "replace"), change(2, "delete")])])
    rec = Recorder()
    run(store, rec, collection="sessions", limit=2)
    assert [(c.op, c.doc) for c in rec.changes] == [
        ("replace", {"_id": "k1", "n": 1}),
        ("delete", None),
    ]


def test_idle_timeout_ends_the_watch_and_empty_answers_are_paced():
    clock = FakeClock()
    store = FakeStore([FakeStream([])])
    rec = Recorder()
    assert run(store, rec, clock, collection="sessions", idle_timeout=3) == 0
    assert clock.now >= 3
    # a server that answers at once is asked again after a pause that grows with the quiet
    assert clock.sleeps and all(PACE_MIN <= p <= PACE_MAX for p in clock.sleeps)
    assert clock.sleeps[0] == PACE_MIN and max(clock.sleeps) == PACE_MAX


def test_log_checkpoint_window_stays_small_and_resumes_exactly():
    store = FakeStore()
    base = datetime(2024, 5, 1, tzinfo=UTC)
    log = [
        {"_id": f"e{i:04d}", "stream": "s", "version": i + 1, "type": "t", "data": {},
         "ts": base + timedelta(milliseconds=20 * i)}
        for i in range(1000)
    ]  # fmt: skip
    store.events.insert_many(log)
    first = Recorder()
    assert run(store, first, start="start", checkpoint="c", limit=600) == 600
    doc = store.db.evstream_checkpoints.find_one({"_id": "c"})
    assert doc["position"]["id"] == "e0599"
    assert doc["updated_at"].tzinfo is not None
    window = [w["id"] for w in store.db.evstream_checkpoint_window.find({"c": "c"})]
    # only the ids the settled position does not cover: about the last 4 s (200 events)
    assert 150 <= len(window) <= 300
    assert doc["settled"]["ts"] <= log[599]["ts"] - timedelta(seconds=4)
    second = Recorder()
    assert run(store, second, checkpoint="c", idle_timeout=1) == 400
    assert [c.doc["_id"] for c in second.changes] == [d["_id"] for d in log[600:]]
    third = Recorder()
    run(store, third, checkpoint="c", reset_checkpoint=True, start="start", limit=3)
    assert [c.doc["_id"] for c in third.changes] == ["e0000", "e0001", "e0002"]
    assert any("checkpoint 'c' reset" in n for n in third.notices)
