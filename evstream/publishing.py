"""Bulk publishing: NDJSON lines in, validated, batched appends out, with an exact account."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from evstream.errors import (
    ConcurrencyConflict,
    ConnectionLost,
    EventRefused,
    FeatureUnsupported,
    InvalidInput,
    ServerUnreachable,
    StorageFull,
)
from evstream.events import (
    IDLE,
    LINE_LIMIT,
    SURROGATE_REASON,
    EventInput,
    InvalidEvent,
    check_copy,
    decode_line,
    event_from_object,
    event_from_plain,
    find_surrogate,
    iter_lines,
    redact_event,
    unwrap_change,
)
from evstream.fieldmap import DEFAULT, FieldMap
from evstream.interrupts import CTRL_C
from evstream.reporting import Progress, ignore, no_progress
from evstream.runtime import fewer_collections
from evstream.storage import (
    Appender,
    AppendResult,
    Store,
    append_one,
    build_document,
    check_size,
    now_utc,
)
from evstream.storage.codec import loads, loads_plain
from evstream.storage.log import no_versions

BATCH_SIZE = 1000
# The longest an event read from a pipe waits for its batch to fill before it is stored
# (`publish --batch-wait`; docs/publish.md, "Batches").
BATCH_WAIT = 0.1
# Lines this long get their exact BSON size checked; shorter ones cannot reach 16 MB.
SIZE_CHECK_FROM = 4 * 1024 * 1024


# Said once per run: ids are what make publishing the same input twice safe.
NO_ID_WARNING = (
    "line {line} has no id (nor may others): an event without one gets a new id each time it "
    "is published, so if this run is stopped (Ctrl-C, SIGTERM, a crash) and the input "
    "published again, the events stored before the stop are stored twice; give each line an "
    '"id" to make a re-run safe'
)

# What `_events` yields while a paced input waits: a moment to send a batch that is due.
IDLE_ITEM: tuple[int, EventInput | None] = (0, None)

# Why the server cannot store an event though it is valid (Store.unstorable), or None.
Refusal = Callable[[EventInput, str | None], str | None]


def parse_line(
    raw: bytes | None,
    line: int,
    refuse: Refusal | None = None,
    *,
    keep_secrets: bool = False,
    fieldmap: FieldMap | None = None,
) -> EventInput | None:
    """One NDJSON line to a validated event (None for a blank line).

    `refuse` names values the server cannot store, so they count as bad lines before anything
    is written. A copy of a stored event whose secrets `watch` masked is a bad line unless
    `keep_secrets` (evstream.events.check_copy). On a mapped log (`fieldmap`, else the map of
    the store `refuse` belongs to) a line may be a stored document of the map's shape (a copy,
    `watch -o json`): it is read through the map, and kept whole (docs/adopting.md)."""
    fm = fieldmap or map_of(refuse)
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
        if fm.shaped and isinstance(obj, dict):
            inner = unwrap_change(obj) if "op" in obj else obj
            if isinstance(inner, dict) and fm.looks_stored(inner):
                fields, rest = fm.split_stored(inner)
                event = event_from_object(fields, line=line, copy_extra=rest)
        if event is None:
            event = event_from_object(obj, line=line)
    if not fm.versioned and event.expected_version is not None:
        raise no_versions(event, fm)
    if raw is not None and len(raw) >= SIZE_CHECK_FROM:
        check_size(build_document(event, 1, now_utc(), fm), line)
    return _storable(event, line, refuse, text, keep_secrets)


def parse_object(
    obj: Any,
    number: int | None,
    refuse: Refusal | None = None,
    *,
    keep_secrets: bool = False,
    fieldmap: FieldMap | None = None,
) -> EventInput:
    """One event given as an object with a line's fields (the Python API's `append_many`) to a
    validated event; `number` is its place in the input, named as the line of an error.

    A plain new event (JSON's types only, whole numbers within 64 bits, finite floats, text
    without lone surrogates, small enough) is taken in one look, as a plain line is, and every
    server stores it: `refuse` is not asked. Anything else is checked field by field, and then
    as a file's line is past the parser: the text that a parser would refuse (lone surrogates),
    the document's exact size, what this server cannot store."""
    fm = fieldmap or map_of(refuse)
    event = event_from_plain(obj, number, texts=True)
    if event is None:
        event = _object_in_full(obj, number, refuse, keep_secrets, fm)
    return _versions_kept(event, fm)


def _object_in_full(
    obj: Any, number: int | None, refuse: Refusal | None, keep_secrets: bool, fm: FieldMap
) -> EventInput:
    """parse_object's long way, for an object that its one look did not take."""
    event = event_from_object(obj, line=number)
    for where, value in (("data", event.data), ("meta", event.meta), ("", event.extra)):
        found = find_surrogate(value, where)
        if found is not None:
            raise InvalidEvent(f"{found or 'the value'} {SURROGATE_REASON}", line=number)
    check_size(build_document(event, 1, now_utc(), fm), number)
    return _storable(event, number, refuse, None, keep_secrets)


def _versions_kept(event: EventInput, fm: FieldMap) -> EventInput:
    """The event, unless it expects a version of a log that keeps none (exit 4)."""
    if event.expected_version is not None and not fm.versioned:
        raise no_versions(event, fm)
    return event


def _storable(
    event: EventInput,
    line: int | None,
    refuse: Refusal | None,
    text: str | None,
    keep_secrets: bool,
) -> EventInput:
    """An event the server can store (`refuse`) and, unless `keep_secrets`, no masked copy."""
    if refuse is not None:
        reason = refuse(event, text)
        if reason:
            raise InvalidEvent(reason, line=line)
    if not keep_secrets:
        check_copy(event)
    return event


def map_of(refuse: Refusal | None) -> FieldMap:
    """The field map of the store whose `unstorable` is `refuse` (the default map without)."""
    fm = getattr(getattr(refuse, "__self__", None), "fieldmap", None)
    return fm if isinstance(fm, FieldMap) else DEFAULT


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
    unnamed: bool = False  # an event without an id was read (and the warning given)

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


def unshown(n: int) -> None:
    """Progress that nobody is shown (publish_events then does not call it)."""


@dataclass
class Hooks:
    """What publishing reports as it goes: progress (bytes read) and warnings."""

    progress: Callable[[int], None] = unshown
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
    fm = map_of(refuse)  # once, not per line
    order = VersionOrder()
    checked = Checked([])
    read = 0
    for number, raw in iter_lines(source):
        size = len(raw) if raw is not None else LINE_LIMIT
        progress(size)
        try:
            event = parse_line(raw, number, refuse, keep_secrets=keep_secrets, fieldmap=fm)
            if event is not None:
                order.see(event)
        except FeatureUnsupported as exc:
            raise refused_input(exc, "nothing was written") from None
        except InvalidEvent as exc:
            bad += 1
            first = first or exc
            if raw is None:
                break  # nothing will be written: no need to find where a line too long ends
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


def refused_input(exc: FeatureUnsupported, written: str) -> FeatureUnsupported:
    """A line this log cannot take (an expected version on a log without versions: exit 4),
    saying what was written before it."""
    return FeatureUnsupported(f"{exc.message}; {written}", hint=exc.hint)


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
    batch_wait: float | None = BATCH_WAIT,
    hooks: Hooks | None = None,
    guard: Callable[[list[EventInput]], None] | None = None,
) -> PublishReport:
    """Append the NDJSON events of `source` in batches; stops at the first bad line unless skipping.

    Everything before a bad line is stored, and the error says exactly how much that was. From
    a pipe (anything but a regular file), an event waits at most about `batch_wait` seconds for
    its batch to fill: a slow producer's events are stored as they come.
    """
    hooks = hooks or Hooks()
    report = PublishReport()
    if batch_wait is not None and not _regular_file(source):
        source = PacedReader(source, tick=_tick(batch_wait))  # type: ignore[assignment]
    else:
        batch_wait = None
    return publish_events(
        store,
        _events(source, report, skip_invalid, hooks, store.unstorable, keep_secrets),
        keep_secrets=keep_secrets,
        batch_size=batch_size,
        batch_wait=batch_wait,
        hooks=hooks,
        report=report,
        guard=guard,
    )


def publish_objects(
    store: Store,
    objects: Iterable[Any],
    *,
    keep_secrets: bool = False,
    skip_invalid: bool = False,
    batch_size: int = BATCH_SIZE,
    hooks: Hooks | None = None,
) -> PublishReport:
    """Append events given as objects with the fields of an NDJSON line, as `publish --file`
    appends a file's: the same checks, batches and account.

    A sequence (a list) is checked whole first, as a file is: nothing is written when an item
    is bad, unless `skip_invalid`. Any other iterable is read as it comes, as standard input
    is, so memory stays flat: what came before a bad item is stored, and the error says so.
    """
    hooks = hooks or Hooks()
    report = PublishReport()
    # Objects from code are no input file that a re-run would publish again: events without ids
    # are the usual case here, so publish_events' warning about them is not given.
    report.unnamed = True
    events: Iterable[EventInput]
    if isinstance(objects, Sequence) and not skip_invalid:
        bad: list[InvalidEvent] = []
        try:
            events = list(_checked_objects(objects, store.unstorable, keep_secrets, bad.append))
        except FeatureUnsupported as exc:
            raise refused_input(exc, "nothing was written") from None
        if bad:
            more = f" (and {len(bad) - 1} more invalid item(s))" if len(bad) > 1 else ""
            raise InvalidInput(f"{bad[0]}{more}; nothing was written")
    else:

        def invalid(exc: InvalidEvent) -> None:
            if not skip_invalid:
                raise exc
            report.skipped += 1
            hooks.warning(f"skipped {exc}")

        events = _checked_objects(objects, store.unstorable, keep_secrets, invalid)
    return publish_events(
        store,
        events,
        keep_secrets=keep_secrets,
        batch_size=batch_size,
        hooks=hooks,
        report=report,
    )


def _checked_objects(
    objects: Iterable[Any],
    refuse: Refusal,
    keep_secrets: bool,
    invalid: Callable[[InvalidEvent], None],
) -> Iterator[EventInput]:
    """Each valid object as a checked event, in order; each bad one's error goes to `invalid`
    (which may raise it)."""
    order = VersionOrder()
    see, seen = order.see, order.last
    fm = map_of(refuse)  # once, not per object
    for number, obj in enumerate(objects, 1):
        try:
            # parse_object, inline: most objects end at its one look
            event = event_from_plain(obj, number, texts=True)
            if event is None:
                event = _object_in_full(obj, number, refuse, keep_secrets, fm)
            if event.expected_version is not None:
                _versions_kept(event, fm)
            if seen or event.version is not None:  # else a new event of an unseen stream
                see(event)
        except InvalidEvent as exc:
            invalid(exc)
            continue
        yield event


def _regular_file(source: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False  # an in-memory stream: pacing it costs a thread, nothing more


def _tick(batch_wait: float) -> float:
    """How long a paced read waits before it lets the publisher look at the clock."""
    return min(max(batch_wait / 4, 0.002), 0.025)


class PacedReader:
    """A pipe read on a thread of its own, so that waiting for input has a timeout: `readline`
    answers `IDLE` when no whole line came within `tick` seconds, and the publisher can store
    what it holds meanwhile. Reads in chunks (one hand-over per 64 KiB, not per line); at most
    MAX_CHUNKS wait, so memory stays bounded."""

    CHUNK = 64 * 1024
    MAX_CHUNKS = 64

    def __init__(self, source: IO[bytes], tick: float) -> None:
        self.source = source
        self.tick = tick
        self.buffer = bytearray()
        self.scanned = 0  # the buffer holds no newline before this offset
        self.eof = False
        self.chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=self.MAX_CHUNKS)
        thread = threading.Thread(target=self._run, name="evstream-reader", daemon=True)
        thread.start()

    def _run(self) -> None:
        read = getattr(self.source, "read1", None) or self.source.read
        try:
            while True:
                chunk = read(self.CHUNK)
                self.chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # handed to the reading thread, which reports it
            self.chunks.put(exc)

    def readline(self, size: int = -1) -> bytes:
        """The next line (at most `size` bytes, as io's readline), b"" at the end, or IDLE."""
        buffer = self.buffer
        limit = size if size >= 0 else 1 << 62
        while True:
            end = buffer.find(b"\n", self.scanned)
            if 0 <= end < limit:
                line = bytes(buffer[: end + 1])
                del buffer[: end + 1]
                self.scanned = 0
                return line
            if len(buffer) >= limit or self.eof:
                line = bytes(buffer[:limit])
                del buffer[:limit]
                self.scanned = 0
                return line
            self.scanned = len(buffer)
            try:
                chunk = self.chunks.get(timeout=self.tick)
            except queue.Empty:
                return IDLE
            if isinstance(chunk, BaseException):
                self.eof = True
                raise chunk
            if chunk:
                buffer += chunk
            else:
                self.eof = True


@fewer_collections()
def publish_events(
    store: Store,
    events: Iterable[EventInput | tuple[int, EventInput | None]],
    *,
    keep_secrets: bool = False,
    batch_size: int = BATCH_SIZE,
    batch_wait: float | None = None,
    hooks: Hooks | None = None,
    report: PublishReport | None = None,
    guard: Callable[[list[EventInput]], None] | None = None,
) -> PublishReport:
    """Append events in batches of one insert each; items may be (bytes read, event) pairs.

    `guard` sees each batch before it is written and may refuse it by raising (erased streams:
    evstream.erasing.ErasedGuard); the batches before it are stored first.

    Reading and checking the input happens here while a writer thread stores the previous batch,
    so the server is kept busy; at most two batches wait in between, so memory stays flat.
    With `batch_wait`, a batch is sent once its first event has waited that long (checked at
    each event, and at each `IDLE_ITEM` a paced input yields while it waits).
    """
    hooks = hooks or Hooks()
    report = report or PublishReport()
    writer = _BatchWriter(Appender(store), report)
    fm = store.fieldmap
    started = time.perf_counter()
    batch: list[EventInput] = []
    due = float("inf")  # when the batch must be sent, whether full or not
    clock = time.monotonic
    progress = None if hooks.progress is unshown else hooks.progress
    paced = batch_wait is not None
    try:
        try:
            for item in events:
                if item is IDLE_ITEM:
                    if batch and clock() >= due:
                        _guarded(guard, batch, writer)
                        writer.submit(batch)
                        batch = []
                    continue
                if type(item) is tuple:
                    size, given = item
                    if progress is not None:
                        progress(size)
                    if given is None:
                        continue
                    event = given
                else:
                    event = item  # type: ignore[assignment]  # not a tuple: an event
                    if progress is not None:
                        progress(1)
                report.read += 1
                if event.id is None and not report.unnamed:
                    report.unnamed = True
                    hooks.warning(NO_ID_WARNING.format(line=event.line or report.read))
                if not (keep_secrets or event.clean) and redact_event(event):
                    report.redacted += 1
                if not batch:
                    ts = now_utc()  # a stand-in: the writer sets ts as it writes (Appender)
                    if paced:
                        due = clock() + batch_wait  # type: ignore[operator]
                # Built here, beside the parsing, so the writer thread only assigns versions.
                event.stored = build_document(event, 0, ts, fm)
                batch.append(event)
                if len(batch) >= batch_size or (paced and clock() >= due):
                    _guarded(guard, batch, writer)
                    writer.submit(batch)
                    batch = []
        except InvalidEvent as exc:
            writer.submit(batch)  # the good lines before the bad one are stored, and said to be
            writer.finish()
            raise InvalidEvent(
                f"{exc.reason}; {report.written_so_far()}", line=exc.lineno
            ) from None
        except FeatureUnsupported as exc:  # an input this log cannot take (no_versions) …
            writer.submit(batch)  # … or the writer's error, which these two raise again
            writer.finish()
            raise refused_input(exc, report.written_so_far()) from None
        _guarded(guard, batch, writer)
        writer.submit(batch)
        writer.finish()
    except (ConcurrencyConflict, EventRefused) as exc:
        raise type(exc)(f"{exc.message}; {report.written_so_far()}") from None
    except StorageFull as exc:
        raise StorageFull(
            f"{exc.message}; {report.written_so_far()}",
            hint="free disk space on the server, then run it again: events with ids are "
            "stored once",
        ) from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (evstream.interrupts)
        writer.abandon()
        raise CTRL_C.stopped(report.stored_so_far()) from None
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


def publish_one(
    store: Store,
    fields: dict[str, Any],
    *,
    keep_secrets: bool = False,
    warning: Callable[[str], None] = lambda message: None,
) -> AppendResult:
    """Append one event given by its fields (type, stream, data, meta, id, expected_version;
    None for one not given), checked, its secrets redacted unless `keep_secrets`."""
    return append_checked(store, checked_event(fields, keep_secrets=keep_secrets, warning=warning))


def checked_event(
    fields: dict[str, Any],
    *,
    keep_secrets: bool = False,
    warning: Callable[[str], None] = lambda message: None,
) -> EventInput:
    """One event from its fields, checked (before any server is asked), its secrets redacted
    unless `keep_secrets`."""
    event = event_from_object({k: v for k, v in fields.items() if v is not None})
    redacted = [] if keep_secrets else redact_event(event)
    if redacted:
        warning(f"redacted {', '.join(redacted)}; use --keep-secrets to store them as given")
    return event


def append_checked(store: Store, event: EventInput) -> AppendResult:
    """Append a checked event, unless this server cannot store one of its values."""
    reason = store.unstorable(event)
    if reason:
        raise InvalidInput(f"{reason}; nothing was written")
    return append_one(store, event)


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
    fm = map_of(refuse)  # once, not per line
    for number, raw in iter_lines(source, first=first_line):
        if raw is IDLE:
            yield IDLE_ITEM
            continue
        size = len(raw) if raw is not None else LINE_LIMIT
        try:
            event = parse_line(raw, number, refuse, keep_secrets=keep_secrets, fieldmap=fm)
            if event is not None:
                order.see(event)
        except InvalidEvent as exc:
            if not skip_invalid:
                raise
            report.skipped += 1
            hooks.warning(f"skipped {exc}")
            event = None
        yield size, event


# --- NDJSON input: a file or standard input (`publish --file`) ---------------------------------


@contextlib.contextmanager
def open_input(path: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """The NDJSON input at `path` (- for standard input) and its size in bytes when it is a
    file; a missing or unreadable path is an input error."""
    if path == "-":
        yield sys.stdin.buffer, None
        return
    target = Path(path)
    if target.is_dir():
        raise InvalidInput(f"{path} is a directory, not an NDJSON file")
    try:
        if target.suffix == ".gz":  # an archive (evstream archive --to PATH.gz)
            import gzip

            handle: IO[bytes] = gzip.open(target, "rb")  # noqa: SIM115
        else:
            handle = open(target, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        size = target.stat().st_size if target.is_file() and target.suffix != ".gz" else None
        yield handle, size


@dataclass
class InputCheck:
    """What checking an input found (`publish --file --check`): nothing is written."""

    lines: int = 0
    events: int = 0
    bad: list[str] = field(default_factory=list)  # each bad line's error, in input order

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready object."""
        return {"lines": self.lines, "events": self.events, "bad": len(self.bad), "written": 0}


def check_input(
    store: Store, source: IO[bytes], size: int | None, *, progress: Progress = no_progress
) -> InputCheck:
    """Check every line of `source`, as publishing would, and say which are bad; what this
    server cannot store (NaN on nx-27017 …) is bad too. Writes nothing."""
    found = InputCheck()
    with progress("checking", total=size, unit="bytes" if size else "") as advance:
        for number, raw in iter_lines(source):
            found.lines += 1
            advance(len(raw) if raw is not None and size else 1)
            try:
                found.events += parse_line(raw, number, store.unstorable) is not None
            except InvalidEvent as exc:
                found.bad.append(str(exc))
    return found


@dataclass
class InputPublished:
    """What publishing an input did: the report, and the lines read (events, blank and bad)."""

    report: PublishReport
    lines: int

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready object; `read` counts lines."""
        return {**self.report.as_dict(), "read": self.lines}


def publish_input(
    store: Store,
    source: IO[bytes],
    size: int | None,
    *,
    seekable: bool,
    skip_invalid: bool = False,
    keep_secrets: bool = False,
    batch_size: int = BATCH_SIZE,
    batch_wait: float | None = BATCH_WAIT,
    progress: Progress = no_progress,
    warning: Callable[[str], None] = ignore,
    guard: Callable[[list[EventInput]], None] | None = None,
) -> InputPublished:
    """Append the events of an NDJSON input. A file that can be read twice (`seekable`) is
    checked whole first, so a bad line writes nothing (unless `skip_invalid`); a stream is
    written as it comes, and a bad line stops it with what was stored before it."""
    parsed = None
    checked = [0]
    if seekable and not skip_invalid:
        with progress("checking", total=size, unit="bytes", counts="lines") as advance:

            def check_line(n: int) -> None:
                checked[0] += 1  # once per line, blank and bad ones included
                advance(n)

            parsed = validate_all(source, check_line, store.unstorable, keep_secrets=keep_secrets)
        source.seek(0)
    total, unit = (size, "bytes") if seekable else (None, "")
    lines_read = [0]
    with progress("publishing", total=total, unit=unit) as advance:

        def count_lines(n: int) -> None:
            lines_read[0] += 1  # called once per line read, events and bad lines alike
            advance(n if seekable else 1)

        hooks = Hooks(progress=count_lines, warning=warning)
        if parsed is not None:  # checked: what was kept is not parsed again
            report = publish_checked(
                store,
                source,
                parsed,
                keep_secrets=keep_secrets,
                batch_size=batch_size,
                hooks=hooks,
                guard=guard,
            )
            lines_read[0] = checked[0]
        else:
            report = publish_stream(
                store,
                source,
                keep_secrets=keep_secrets,
                skip_invalid=skip_invalid,
                batch_size=batch_size,
                batch_wait=batch_wait,
                hooks=hooks,
                guard=guard,
            )
    if report.read == 0 and report.skipped == 0:
        warning("the input had no events")
    return InputPublished(report, lines_read[0])
