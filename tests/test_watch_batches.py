"""A backlog goes from the reader thread to the printer a driver batch at a time, and the
printed lines are flushed before the watch waits for anything (docs/handover.md, "Reading
a backlog"): order, --limit and checkpoints stay exact, and a reader of a quiet stream has
every line."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fake_changes import FakeCluster, FakeStore
from test_watch_cli import watcher  # noqa: F401 - the fixture

import evstream.watching as watching
from evstream.storage.changes import ChangeFeed
from evstream.watching import Hooks, Watcher, WatchOptions

UTC = timezone.utc


def events(prefix: str, n: int, start: datetime) -> list[dict[str, Any]]:
    return [
        {"_id": f"{prefix}{i:05d}", "stream": f"s{i % 7}", "version": i // 7 + 1,
         "type": "login", "data": {"n": i}, "ts": start + timedelta(microseconds=i)}
        for i in range(n)
    ]  # fmt: skip


class Log:
    """Hooks that note, in one list, each change delivered ('d', id), each flush ('W') and
    each checkpoint write ('S')."""

    def __init__(self) -> None:
        self.entries: list[Any] = []

    def hooks(self) -> Hooks:
        return Hooks(
            deliver=lambda c: self.entries.append(("d", c.doc["_id"])),
            written=lambda: self.entries.append("W"),
        )

    def ids(self) -> list[str]:
        return [e[1] for e in self.entries if isinstance(e, tuple)]


def backlog_store(n: int) -> tuple[FakeStore, list[dict[str, Any]]]:
    """A stream whose first getMore finds `n` events committed after it opened."""
    cluster = FakeCluster()
    live = events("live", n, datetime.now(UTC))
    store = FakeStore(cluster, [[("do", lambda: cluster.insert("events", live))]])
    return store, live


def test_poll_batch_hands_over_what_the_driver_holds_and_no_more():
    store, live = backlog_store(2500)  # batches of 1,000
    feed = ChangeFeed(store, "events", [])
    got = [feed.poll_batch(most=600), feed.poll_batch(), feed.poll_batch(), feed.poll_batch()]
    assert [len(b) for b in got] == [600, 400, 1000, 500]
    assert [c.doc["_id"] for b in got for c in b] == [d["_id"] for d in live]
    assert feed.poll_batch() == []  # an empty answer


@pytest.mark.parametrize("limit", [1, 999, 1000, 1001, 2345])
def test_a_backlog_in_batches_keeps_commit_order_and_limit_exact(limit):
    store, live = backlog_store(2500)
    log = Log()
    shown = Watcher(store, WatchOptions(limit=limit, idle_timeout=5), log.hooks()).run()
    assert shown == limit
    assert log.ids() == [d["_id"] for d in live[:limit]]
    assert log.entries[-1] == "W"  # what was printed is flushed on the way out


def test_a_backlog_is_flushed_before_the_watch_waits_not_per_line():
    store, live = backlog_store(2500)
    log = Log()
    Watcher(store, WatchOptions(idle_timeout=0.5), log.hooks()).run()
    assert log.ids() == [d["_id"] for d in live]
    last = max(i for i, e in enumerate(log.entries) if isinstance(e, tuple))
    assert "W" in log.entries[last:]
    assert log.entries.count("W") < len(live) / 10


def test_with_a_checkpoint_each_change_is_flushed_before_it_is_saved(monkeypatch):
    store, live = backlog_store(300)
    log = Log()
    record_shown = watching.record_shown

    def saving(*args: Any) -> None:
        log.entries.append("S")
        record_shown(*args)

    monkeypatch.setattr(watching, "record_shown", saving)
    options = WatchOptions(checkpoint="c", idle_timeout=0.5)
    Watcher(store, options, log.hooks()).run()
    assert log.ids() == [d["_id"] for d in live]
    entries = log.entries
    for i, entry in enumerate(entries):
        if entry == "S":
            before = [e for e in entries[:i] if e != "S"]
            assert not before or before[-1] == "W", f"saved unflushed at entry {i}"


def test_a_backlog_reaches_a_pipe_reader_while_the_watch_goes_on(db, watcher):  # noqa: F811
    db.events.insert_one(events("first", 1, datetime.now(UTC))[0])
    watching_ = watcher().ready()
    backlog = events("b", 2500, datetime.now(UTC))
    for i in range(0, len(backlog), 500):
        db.events.insert_many(backlog[i : i + 500])
    watching_.lines(len(backlog))  # the stream is quiet now: every line is out
    assert watching_.proc.poll() is None
    ids = [d["doc"]["_id"] for d in watching_.docs()]
    assert ids == [d["_id"] for d in backlog]
    watching_.proc.send_signal(signal.SIGINT)
    assert watching_.finish() == 130


def test_an_error_after_part_of_a_batch_comes_after_that_part():
    store, live = backlog_store(10)
    feed = ChangeFeed(store, "events", [])
    polls = 0
    poll = feed.poll

    def failing_third() -> Any:
        nonlocal polls
        polls += 1
        if polls == 3:
            raise RuntimeError("boom")
        return poll()

    feed.poll = failing_third  # type: ignore[method-assign]
    first = feed.poll_batch()
    assert [c.doc["_id"] for c in first] == [d["_id"] for d in live[:2]]
    with pytest.raises(RuntimeError, match="boom"):
        feed.poll_batch()
