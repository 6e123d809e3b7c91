"""A change stream that pymongo resumed by itself across a lost connection (docs/storage.md,
"Lost connections"): exact on MongoDB, where the oplog outlives a restart; on nx-27017 what
was written while no stream was open is missing from its history, so the log's watch reads
the log again, and a watch of another collection goes on with a warning.

The change streams are the strict fake's (tests/fake_changes.py); `FakeNxStore` is the same
fake with the real `Nx27017Store` adapter's answers.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fake_changes import FakeCluster, FakeStore
from test_handover import Recorder

from evstream.storage import Nx27017Store
from evstream.storage.changes import ChangeFeed, HistoryGap, StreamInterrupted
from evstream.watching import Watcher, WatchOptions

UTC = timezone.utc


class FakeNxStore(FakeStore, Nx27017Store):
    """The fake's streams, with nx-27017's adapter: a driver's resume is not exact there."""




def events(prefix: str, n: int, start: datetime) -> list[dict[str, Any]]:
    return [
        {"_id": f"{prefix}{i}", "stream": "alice", "version": i + 1, "type": "login",
         "data": {}, "ts": start + timedelta(milliseconds=10 * i)}
        for i in range(n)
    ]  # fmt: skip


def watch(store: Any, rec: Recorder, **options: Any) -> int:
    """Watch until quiet for a second (the real clock: the reader thread paces on it too)."""
    options.setdefault("idle_timeout", 1.0)
    return Watcher(store, WatchOptions(**options), rec.hooks()).run()


# --- the detection, in the storage layer ---------------------------------------------------------


@pytest.mark.parametrize("rereads", [True, False])
def test_on_mongodb_a_driver_resume_is_trusted(rereads: bool) -> None:
    cluster = FakeCluster()
    store = FakeStore(cluster, [[("resumed", []), "normal"]])
    assert store.driver_resume_is_exact
    feed = ChangeFeed(store, "events", [], rereads=rereads)
    cluster.insert("events", events("a", 1, datetime.now(UTC)))
    change = feed.poll()  # the getMore that pymongo resumed: no error, the change as usual
    assert change is not None and change.doc is not None and change.doc["_id"] == "a0"
    assert feed.poll() is None


def test_on_nx27017_a_driver_resume_ends_a_stream_whose_reader_reads_again() -> None:
    cluster = FakeCluster()
    store = FakeNxStore(cluster, [[("resumed", [])]])
    assert not store.driver_resume_is_exact
    feed = ChangeFeed(store, "events", [], rereads=True)
    cluster.insert("events", events("a", 1, datetime.now(UTC)))
    with pytest.raises(StreamInterrupted) as caught:
        feed.poll()  # the change it got is in the log, which the reader reads again
    assert caught.value.gap is None  # nothing to warn about: the read covers it


def test_on_nx27017_a_driver_resume_of_another_collection_goes_on_with_a_warning() -> None:
    cluster = FakeCluster()
    store = FakeNxStore(cluster, [[("resumed", [])]])
    feed = ChangeFeed(store, "orders", [])
    cluster.insert("orders", [{"_id": "o1", "total": 3}])
    with pytest.raises(HistoryGap) as caught:
        feed.poll()
    gap = caught.value
    assert gap.change is not None and gap.change.key == {"_id": "o1"}  # handed on, not lost
    assert "'orders'" in gap.message and "may be missing" in gap.message
    assert "nx-27017" in gap.message
    assert feed.poll() is None  # said once per lost connection, then the stream goes on


@pytest.mark.parametrize("nx", [False, True])
def test_a_stream_the_server_ended_without_an_invalidate_is_an_interruption(nx: bool) -> None:
    store = (FakeNxStore if nx else FakeStore)(script=[[("ended", None)]])
    feed = ChangeFeed(store, "orders", [])
    with pytest.raises(StreamInterrupted, match="ended the change stream") as caught:
        feed.poll()  # not None forever: that watch would hang silently
    assert (caught.value.gap is not None) is nx


# --- the watch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint", [None, "cp"])
def test_a_log_watch_on_nx27017_reads_the_log_again_after_a_driver_resume(
    checkpoint: str | None,
) -> None:
    cluster = FakeCluster()
    now = datetime.now(UTC)
    before = events("before", 3, now - timedelta(seconds=1))
    meanwhile = events("meanwhile", 2, now)  # written while no stream was open: unrecorded
    later = events("later", 2, now + timedelta(seconds=1))
    cluster.insert("events", before)
    plan = [("resumed", meanwhile)]  # the getMore after the restart: pymongo resumed it
    store = FakeNxStore(cluster, [plan, [("do", lambda: cluster.insert("events", later))]])
    rec = Recorder()
    watch(store, rec, start="start", checkpoint=checkpoint)
    expected = [d["_id"] for d in before + meanwhile + later]
    assert sorted(rec.ids()) == sorted(expected) and len(rec.ids()) == len(expected)
    assert len(store.opened) == 2  # a new session: a new stream, and the log read again
    assert any(n.startswith("lost the connection") for n in rec.notices), rec.notices
    assert any(n.startswith("reconnected") for n in rec.notices), rec.notices
    assert rec.warnings == []


def test_a_log_watch_on_mongodb_rides_a_driver_resume_without_a_new_session() -> None:
    cluster = FakeCluster()
    now = datetime.now(UTC)
    before = events("before", 3, now - timedelta(seconds=1))
    later = events("later", 2, now + timedelta(seconds=1))
    cluster.insert("events", before)
    plan = [("resumed", []), ("do", lambda: cluster.insert("events", later))]
    store = FakeStore(cluster, [plan])
    rec = Recorder()
    watch(store, rec, start="start")
    assert rec.ids() == [d["_id"] for d in before + later]
    assert len(store.opened) == 1
    assert not [n for n in rec.notices if "lost the connection" in n]


def test_a_watch_of_another_collection_on_nx27017_goes_on_and_warns_once() -> None:
    cluster = FakeCluster()

    def write(name: str) -> Any:
        return lambda: cluster.insert("orders", [{"_id": name, "total": 1}])

    plan = [("do", write("o1")), ("resumed", []), ("do", write("o2")), ("resumed", []),
            ("do", write("o3"))]  # fmt: skip
    store = FakeNxStore(cluster, [plan])
    rec = Recorder()
    watch(store, rec, collection="orders")
    assert [c.key["_id"] for c in rec.changes] == ["o1", "o2", "o3"]
    assert len(store.opened) == 1  # the stream went on
    (warning,) = [w for w in rec.warnings if "does not exist" not in w]
    assert "changes to 'orders' made while the server was unreachable" in warning
    assert "may be missing" in warning


def test_a_watch_of_another_collection_whose_stream_ended_resumes_from_its_token() -> None:
    cluster = FakeCluster()
    plan = [("do", lambda: cluster.insert("orders", [{"_id": "o1"}])), ("ended", None)]
    second = [("do", lambda: cluster.insert("orders", [{"_id": "o2"}]))]
    store = FakeNxStore(cluster, [plan, second])
    rec = Recorder()
    watch(store, rec, collection="orders")
    assert [c.key["_id"] for c in rec.changes] == ["o1", "o2"]
    assert store.calls[1]["resume_after"] == cluster.oplog[0]["_id"]  # o1's token
    assert len(store.opened) == 2
    assert any(n.startswith("lost the connection") for n in rec.notices), rec.notices
    assert len([w for w in rec.warnings if "may be missing" in w]) == 1, rec.warnings
