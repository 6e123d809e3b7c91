"""Publishing from a pipe (issue 24, findings 2 and 6): a slow producer's events are stored
within `batch_wait`, each batch's `ts` is the time it is written, and concurrent publishers on
one stream leave `ts` in version order."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from waiting import wait_for

from evstream.check import LogScan
from evstream.events import IDLE, EventInput, iter_lines
from evstream.publishing import PacedReader, publish_stream
from evstream.storage import Appender, Store, build_document

UTC = timezone.utc
LINE = b'{"type": "t", "stream": "slow", "data": {}}\n'


def test_a_slow_producers_events_are_stored_as_they_come(mock_store: Store) -> None:
    read_end, write_end = os.pipe()
    source = os.fdopen(read_end, "rb")
    done: dict[str, Any] = {}

    def publish() -> None:
        done["report"] = publish_stream(mock_store, source, batch_wait=0.05)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    events = mock_store.events
    try:
        os.write(write_end, LINE)
        wait_for(lambda: events.count_documents({}) == 1, 10, "the first event, input still open")
        first = events.find_one({"version": 1})
        assert first is not None
        between = datetime.now(UTC)
        os.write(write_end, LINE + LINE)
        wait_for(lambda: events.count_documents({}) == 3, 10, "the next two events")
    finally:
        os.close(write_end)
    thread.join(10)
    assert done["report"].published == 3
    second = events.find_one({"version": 2})
    assert second is not None
    # ts is the time the batch was written, not when the run (or its first batch) began.
    assert second["ts"] >= between.replace(microsecond=between.microsecond // 1000 * 1000)
    assert second["ts"] > first["ts"]


def test_a_paced_reader_gives_lines_as_readline_does_and_says_when_it_waits() -> None:
    read_end, write_end = os.pipe()
    reader = PacedReader(os.fdopen(read_end, "rb"), tick=0.01)
    os.write(write_end, b"a\nbb")
    assert reader.readline(100) == b"a\n"
    assert reader.readline(100) is IDLE  # "bb" is not a whole line yet
    os.write(write_end, b"b\n" + b"x" * 10 + b"\nlast")
    assert reader.readline(100) == b"bbb\n"
    assert reader.readline(4) == b"xxxx"  # at most `size` bytes, as io's readline
    assert reader.readline(100) == b"xxxxxx\n"
    os.close(write_end)
    assert reader.readline(100) == b"last"
    assert reader.readline(100) == b""


def test_iter_lines_passes_a_wait_on_without_counting_a_line() -> None:
    class Script:
        def __init__(self) -> None:
            self.answers = [b"a\n", IDLE, b"b\n", b""]

        def readline(self, size: int) -> bytes:
            return self.answers.pop(0)

    assert list(iter_lines(Script())) == [(1, b"a\n"), (1, IDLE), (2, b"b\n")]


def test_a_batch_gets_the_time_it_is_written_even_when_another_publisher_went_first(
    mock_store: Store,
) -> None:
    # Publisher A reads and prepares its batch first (as publish_events builds documents beside
    # the parsing); publisher B writes the same stream meanwhile; then A writes. A's events come
    # after B's in version order, so their ts must not be before B's.
    early = datetime.now(UTC) - timedelta(seconds=5)
    a_batch = [EventInput(type="t", stream="hot", data={"by": "a"}) for _ in range(3)]
    for event in a_batch:
        event.stored = build_document(event, 0, early)
    b_batch = [EventInput(type="t", stream="hot", data={"by": "b"}) for _ in range(3)]
    Appender(mock_store).write(b_batch)
    Appender(mock_store).write(a_batch)
    docs = list(mock_store.events.find({"stream": "hot"}).sort("version", 1))
    assert [d["data"]["by"] for d in docs] == ["b"] * 3 + ["a"] * 3
    assert all(x["ts"] <= y["ts"] for x, y in zip(docs, docs[1:], strict=False))


def test_a_copy_keeps_its_own_ts(mock_store: Store) -> None:
    when = datetime(2020, 1, 1, tzinfo=UTC)
    copy = EventInput(type="t", stream="c", data={}, id="e1", version=1, ts=when)
    copy.expected_version = 0
    copy.stored = build_document(copy, 0, datetime.now(UTC))
    Appender(mock_store).write([copy])
    stored = mock_store.events.find_one({"_id": "e1"})
    assert stored is not None and stored["ts"].replace(tzinfo=UTC) == when


def scan(steps: list[float]) -> LogScan:
    """A scan of one stream whose successive ts move by these seconds."""
    log = LogScan()
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    for version, step in enumerate([0.0, *steps], start=1):
        ts += timedelta(seconds=step)
        log.add({"_id": f"e{version}", "stream": "s", "version": version, "type": "t", "ts": ts})
    return log


def test_check_allows_the_disorder_the_handover_allows() -> None:
    # Concurrent publishers or a slightly skewed clock: up to 2 s back is no finding.
    assert not [f for f in scan([1, -1.5, 0.5, -2.0]).findings() if f.kind == "ts backwards"]


def test_check_reports_a_skew_past_2_s_with_its_size() -> None:
    [finding] = [f for f in scan([1, -3.25, 5, -2.5]).findings() if f.kind == "ts backwards"]
    assert finding.count == 2
    assert "up to 3.2 s before" in finding.problem and "the 2 s the watch handover allows" in (
        finding.problem
    )


def test_publish_from_a_pipe_that_stays_open_stores_each_event_soon(cli: Any, db: Any) -> None:
    # The reproduction: a producer writes a line a second; nothing may wait for 1,000.
    proc = cli.popen("publish", "--file", "-", "-o", "json")
    assert proc.stdin is not None
    try:
        for n in (1, 2):
            proc.stdin.write('{"type": "t", "stream": "slow", "data": {}}\n')
            proc.stdin.flush()
            wait_for(lambda n=n: db.events.count_documents({}) == n, 20, f"event {n} stored")
    finally:
        out, err = proc.communicate(timeout=30)  # closes stdin: the end of input
    assert proc.returncode == 0, err
    assert '"published": 2' in out
