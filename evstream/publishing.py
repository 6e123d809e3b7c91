"""Bulk publishing: NDJSON lines in, validated, batched appends out, with an exact account."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from evstream.errors import (
    ConcurrencyConflict,
    ConnectionLost,
    EventRefused,
    Interrupted,
    InvalidInput,
    ServerUnreachable,
)
from evstream.events import (
    LINE_LIMIT,
    EventInput,
    InvalidEvent,
    check_copy,
    decode_line,
    event_from_object,
    event_from_plain,
    iter_lines,
    redact_event,
)
from evstream.runtime import fewer_collections
from evstream.storage import Appender, Store, build_document, check_size, now_utc
from evstream.storage.codec import loads, loads_plain

BATCH_SIZE = 1000
# Lines this long get their exact BSON size checked; shorter ones cannot reach 16 MB.
SIZE_CHECK_FROM = 4 * 1024 * 1024


# Why the server cannot store an event though it is valid (Store.unstorable), or None.
Refusal = Callable[[EventInput, str], str | None]


def parse_line(
    raw: bytes | None, line: int, refuse: Refusal | None = None, *, keep_secrets: bool = False
) -> EventInput | None:
    """One NDJSON line to a validated event (None for a blank line).

    `refuse` names values the server cannot store, so they count as bad lines before anything
    is written. A copy of a stored event whose secrets `watch` masked is a bad line unless
    `keep_secrets` (evstream.events.check_copy)."""
    text = decode_line(raw, line)
    if text is None:
        return None
    plain = loads_plain(text)
    event = None if plain is None else event_from_plain(plain, line)
    if event is None:  # anything unusual: parsed exactly, checked field by field
        try:
            obj = loads(text)
        except ValueError as exc:
            raise InvalidEvent(f"not valid JSON: {exc}", line=line) from None
        event = event_from_object(obj, line=line)
    if raw is not None and len(raw) >= SIZE_CHECK_FROM:
        check_size(build_document(event, 1, now_utc()), line)
    if refuse is not None:
        reason = refuse(event, text)
        if reason:
            raise InvalidEvent(reason, line=line)
    if not keep_secrets:
        check_copy(event)
    return event


SORT_ADVICE = (
    "sort the file by stream and version first (mongoexport --sort '{stream: 1, version: 1}', "
    "or jq -s -c 'sort_by(.stream, .version)[]')"
)


class VersionOrder:
    """Checks that the stored events of a stream come in version order within one input.

    A line that carries `version` (a stored event) must be the next version after the line
    before it of the same stream; new events in between count one version each. A dump sorted
    by `_id` breaks this, and then the copy would stop midway with a conflict: found while
    checking instead, with both line numbers. Memory is bounded: past MAX_STREAMS streams the
    record starts again (the writes still refuse a wrong version, exit 5).
    """

    MAX_STREAMS = 200_000

    def __init__(self) -> None:
        # stream → (its version at the line, that line, the line's event id)
        self.last: dict[str, tuple[int, int | None, str | None]] = {}

    def see(self, event: EventInput) -> None:
        """Record one line's event; raises InvalidEvent when its version is out of order."""
        before = self.last.get(event.stream)
        if event.version is None:
            if before is not None:
                self.last[event.stream] = (before[0] + 1, event.line, event.id)
            return
        if before is not None:
            version, line, event_id = before
            if event.version == version and event.id is not None and event.id == event_id:
                return  # the same stored event twice: stored once, as a duplicate id
            if event.version <= version:
                raise InvalidEvent(
                    f"stream {event.stream!r} has version {event.version} after version "
                    f"{version} (line {line}): its events are out of order; {SORT_ADVICE}",
                    line=event.line,
                )
            if event.version > version + 1:
                missing = (
                    f"version {version + 1} belongs"
                    if event.version == version + 2
                    else f"versions {version + 1} to {event.version - 1} belong"
                )
                raise InvalidEvent(
                    f"stream {event.stream!r} has version {event.version} after version "
                    f"{version} (line {line}): {missing} between them; if the input holds "
                    f"them later, {SORT_ADVICE}",
                    line=event.line,
                )
        elif len(self.last) >= self.MAX_STREAMS:
            self.last.clear()
        self.last[event.stream] = (event.version, event.line, event.id)


@dataclass
class PublishReport:
    """The account of a bulk publish, shown as its summary."""

    published: int = 0
    duplicates: int = 0
    skipped: int = 0
    read: int = 0
    seconds: float = 0.0
    redacted: int = 0

    @property
    def rate(self) -> float:
        """Events stored per second."""
        return self.published / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready object."""
        return {
            "published": self.published,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "read": self.read,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate, 1),
        }

    def stored_so_far(self) -> str:
        """How much is stored, for a run that stopped early."""
        return f"{self.published} event(s) stored, {self.duplicates} already there"

    def written_so_far(self) -> str:
        """What is stored already, for an error that stops the run midway."""
        if not self.published and not self.duplicates:
            return "nothing was written"
        return f"{self.published} event(s) before it were stored" + (
            f" and {self.duplicates} were already stored" if self.duplicates else ""
        )


@dataclass
class Hooks:
    """What publishing reports as it goes: progress (bytes read) and warnings."""

    progress: Callable[[int], None] = lambda n: None
    warning: Callable[[str], None] = lambda message: None


# A checked file's first lines, up to this much input, keep their parsed events for the writing
# pass, which parses only what lies beyond: about 80 MB of parsed events at most, however large
# the file.
KEEP_PARSED_BYTES = 16 * 1024 * 1024


@dataclass
class Checked:
    """What `validate_all` read of a file that is valid throughout: the (bytes, event) pairs of
    its first lines, and where the lines it did not keep begin (None: it kept them all)."""

    kept: list[tuple[int, EventInput]]
    offset: int | None = None  # the byte offset of the first line not kept
    line: int = 1  # that line's number


@fewer_collections()
def validate_all(
    source: IO[bytes],
    progress: Callable[[int], None] = lambda n: None,
    refuse: Refusal | None = None,
    *,
    keep_secrets: bool = False,
    keep_bytes: int = KEEP_PARSED_BYTES,
) -> Checked:
    """Read a whole file once, checking every line and the version order of stored events;
    raises one error naming the first bad line.

    The events of the first `keep_bytes` of input are kept for `publish_checked`, so that they
    are parsed once; lines beyond are checked here and parsed again when written.
    """
    first: InvalidEvent | None = None
    bad = 0
    order = VersionOrder()
    checked = Checked([])
    read = 0
    for number, raw in iter_lines(source):
        size = len(raw) if raw is not None else LINE_LIMIT
        progress(size)
        try:
            event = parse_line(raw, number, refuse, keep_secrets=keep_secrets)
            if event is not None:
                order.see(event)
        except InvalidEvent as exc:
            bad += 1
            first = first or exc
            continue
        if checked.offset is None:
            if read + size > keep_bytes:
                checked.offset, checked.line = read, number
            elif event is not None:
                checked.kept.append((size, event))
        read += size
    if first is not None:
        more = f" (and {bad - 1} more invalid line(s))" if bad > 1 else ""
        raise InvalidInput(f"{first}{more}; nothing was written")
    return checked


def publish_checked(
    store: Store,
    source: IO[bytes],
    checked: Checked,
    *,
    keep_secrets: bool = False,
    batch_size: int = BATCH_SIZE,
    hooks: Hooks | None = None,
    guard: Callable[[list[EventInput]], None] | None = None,
) -> PublishReport:
    """Append a file `validate_all` found valid: its kept events, then the lines beyond them."""
    hooks = hooks or Hooks()
    report = PublishReport()
    events: Iterable[tuple[int, EventInput | None]] = _drain(checked.kept)
    if checked.offset is not None:
        source.seek(checked.offset)
        rest = _events(
            source, report, False, hooks, store.unstorable, keep_secrets, first_line=checked.line
        )
        events = itertools.chain(events, rest)
    return publish_events(
        store,
        events,
        keep_secrets=keep_secrets,
        batch_size=batch_size,
        hooks=hooks,
        report=report,
        guard=guard,
    )


def _drain(kept: list[tuple[int, EventInput]]) -> Iterator[tuple[int, EventInput]]:
    """The kept pairs in order, each let go once taken, so memory falls as they are written."""
    kept.reverse()
    while kept:
        yield kept.pop()


def publish_stream(
    store: Store,
    source: IO[bytes],
    *,
    keep_secrets: bool = False,
    skip_invalid: bool = False,
    batch_size: int = BATCH_SIZE,
    hooks: Hooks | None = None,
    guard: Callable[[list[EventInput]], None] | None = None,
) -> PublishReport:
    """Append the NDJSON events of `source` in batches; stops at the first bad line unless skipping.

    Everything before a bad line is stored, and the error says exactly how much that was.
    """
    hooks = hooks or Hooks()
    report = PublishReport()
    return publish_events(
        store,
        _events(source, report, skip_invalid, hooks, store.unstorable, keep_secrets),
        keep_secrets=keep_secrets,
        batch_size=batch_size,
        hooks=hooks,
        report=report,
        guard=guard,
    )


@fewer_collections()
def publish_events(
    store: Store,
    events: Iterable[EventInput | tuple[int, EventInput | None]],
    *,
    keep_secrets: bool = False,
    batch_size: int = BATCH_SIZE,
    hooks: Hooks | None = None,
    report: PublishReport | None = None,
    guard: Callable[[list[EventInput]], None] | None = None,
) -> PublishReport:
    """Append events in batches of one insert each; items may be (bytes read, event) pairs.

    `guard` sees each batch before it is written and may refuse it by raising (erased streams:
    evstream.erasing.ErasedGuard); the batches before it are stored first.

    Reading and checking the input happens here while a writer thread stores the previous batch,
    so the server is kept busy; at most two batches wait in between, so memory stays flat.
    """
    hooks = hooks or Hooks()
    report = report or PublishReport()
    writer = _BatchWriter(Appender(store), report)
    started = time.perf_counter()
    batch: list[EventInput] = []
    try:
        try:
            for item in events:
                if isinstance(item, tuple):
                    size, event = item
                    hooks.progress(size)
                else:
                    event = item
                    hooks.progress(1)
                if event is None:
                    continue
                report.read += 1
                if not keep_secrets and redact_event(event):
                    report.redacted += 1
                if not batch:
                    ts = now_utc()
                # Built here, beside the parsing, so the writer thread only assigns versions.
                event.stored = build_document(event, 0, ts)
                batch.append(event)
                if len(batch) >= batch_size:
                    _guarded(guard, batch, writer)
                    writer.submit(batch)
                    batch = []
        except InvalidEvent as exc:
            writer.submit(batch)  # the good lines before the bad one are stored, and said to be
            writer.finish()
            raise InvalidEvent(
                f"{exc.reason}; {report.written_so_far()}", line=exc.lineno
            ) from None
        _guarded(guard, batch, writer)
        writer.submit(batch)
        writer.finish()
    except (ConcurrencyConflict, EventRefused) as exc:
        raise type(exc)(f"{exc.message}; {report.written_so_far()}") from None
    except KeyboardInterrupt:
        writer.abandon()
        raise Interrupted(f"interrupted: {report.stored_so_far()}") from None
    except ConnectionLost as exc:
        raise ServerUnreachable(
            f"lost the connection to the server ({exc.message}): {report.stored_so_far()}",
            hint="publish the same input again once it is back: events with ids are stored once",
        ) from None
    finally:
        writer.abandon()
        report.seconds = time.perf_counter() - started
    if report.redacted and not keep_secrets:
        hooks.warning(
            f"redacted secret-looking fields in {report.redacted} event(s); "
            "use --keep-secrets to store them as given"
        )
    return report


def _guarded(
    guard: Callable[[list[EventInput]], None] | None, batch: list[EventInput], writer: _BatchWriter
) -> None:
    """Let the guard see a batch; when it refuses, what was submitted before is stored first."""
    if guard is None or not batch:
        return
    try:
        guard(batch)
    except ConcurrencyConflict:
        writer.finish()
        raise


class _BatchWriter:
    """Stores submitted batches in order on a thread of its own; the first error stops it."""

    def __init__(self, appender: Appender, report: PublishReport) -> None:
        self.appender = appender
        self.report = report
        self.queue: queue.Queue[list[EventInput] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="evstream-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (batch := self.queue.get()) is not None:
            if self.error is not None or self.stopped:
                continue  # after a failure or an interrupt, later batches are not written
            try:
                self.appender.write(batch)
            except BaseException as exc:  # handed to the reading thread, which reports it
                self.error = exc
            finally:
                self.report.published = self.appender.inserted
                self.report.duplicates = self.appender.duplicates

    def submit(self, batch: list[EventInput]) -> None:
        """Queue a batch (blocking while two wait); raises the writer's error, if any."""
        self._raise()
        if batch:
            self.queue.put(batch)

    def finish(self) -> None:
        """Wait until everything submitted is stored; raises the writer's error, if any."""
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def abandon(self) -> None:
        """Stop after the batch in flight (Ctrl-C, errors) and wait, so the report is exact."""
        if self.thread.is_alive():
            self.stopped = True
            self.queue.put(None)
            self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def _events(
    source: IO[bytes],
    report: PublishReport,
    skip_invalid: bool,
    hooks: Hooks,
    refuse: Refusal,
    keep_secrets: bool = False,
    *,
    first_line: int = 1,
) -> Iterator[tuple[int, EventInput | None]]:
    """(bytes read, event or None) for each line (numbered from `first_line`); bad lines raise
    unless skipped."""
    order = VersionOrder()
    for number, raw in iter_lines(source, first=first_line):
        size = len(raw) if raw is not None else LINE_LIMIT
        try:
            event = parse_line(raw, number, refuse, keep_secrets=keep_secrets)
            if event is not None:
                order.see(event)
        except InvalidEvent as exc:
            if not skip_invalid:
                raise
            report.skipped += 1
            hooks.warning(f"skipped {exc}")
            event = None
        yield size, event
