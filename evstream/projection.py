"""The `sessions` projection in MongoDB: full and incremental rebuilds from the event log.

How a rebuild stays safe for readers, after `kill -9`, beside concurrent runs and on sharded
collections, without renames or transactions (STORES.md: neither can be trusted on nx-27017):

- Each session is written as one whole document by one single-document write (a `ReplaceOne`
  upsert whose replacement carries its `_id`, which nx-27017 needs and MongoDB accepts), so a
  reader sees either the old session or the new one, and `sessions` is never emptied. Replacing
  whole documents also keeps dates real BSON dates on nx-27017, where `$set` of an existing
  document stores them as strings.
- Writes are conditional on the stored `version` being at or below the new one, so a session
  never goes back to an older state under concurrent runs. A full rebuild is authoritative: when
  the stored session is ahead of the log (events were deleted), it replaces it anyway.
- A full rebuild reads the log in (stream, version) order and the existing sessions in `_id`
  order, side by side (a merge join): memory stays bounded, unchanged sessions are not written,
  and sessions whose stream has no events left are deleted (checked against the log first).
- The checkpoint (collection `evstream_projections`, one small document per projection) is
  written last, only by a run that finished. A run killed midway leaves sessions that are each a
  correct fold of a prefix of their stream, and the previous checkpoint, so any next run (full or
  incremental) makes the projection exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo import InsertOne, ReplaceOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, CursorNotFound, DuplicateKeyError

from evstream import sessions
from evstream.errors import EvstreamError
from evstream.storage import (
    DUPLICATE_KEY,
    SESSIONS,
    Store,
    now_utc,
    stream_head,
)

PROJECTIONS = "evstream_projections"
PROJECTION_ID = "sessions"
DEFAULT_MARGIN = 10.0
WRITE_BATCH = 5000
READ_BATCH = 2000
# An incremental run reads new events in chunks of this many, so its memory stays bounded.
CHUNK_EVENTS = 20_000
FOLD_BATCH = 1000
EVENT_FIELDS = {"_id": 0, "stream": 1, "version": 1, "type": 1, "data": 1, "ts": 1}
MAX_WRITE_ATTEMPTS = 20

Doc = dict[str, Any]


# --- what a run does and reports ---------------------------------------------------------------


@dataclass
class Plan:
    """What a rebuild will do, decided before it reads anything (so the counts come first).

    `next_since` and `covered` become the checkpoint: every event with `ts` before `next_since`
    that existed when the plan was made (there were `covered` of them) is applied by the run.
    """

    mode: str
    next_since: datetime
    covered: int
    total: int | None
    since: datetime | None = None
    last_event_ts: datetime | None = None
    reason: str | None = None
    margin: float = DEFAULT_MARGIN
    started: float = field(default_factory=time.perf_counter)


@dataclass
class RebuildReport:
    """The account of a rebuild, shown as its summary."""

    mode: str
    dry_run: bool = False
    streams: int = 0
    events: int = 0
    applied: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    superseded: int = 0
    seconds: float = 0.0
    reason: str | None = None
    last_event_ts: datetime | None = None

    @property
    def written(self) -> int:
        """Sessions written (or, in a dry run, that would be)."""
        return self.created + self.updated

    @property
    def rate(self) -> float:
        """Events read per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready object."""
        doc: dict[str, Any] = {
            "mode": self.mode,
            "dry_run": self.dry_run,
            "streams": self.streams,
            "events": self.events,
            "applied": self.applied,
            "written": self.written,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "superseded": self.superseded,
            "events_per_second": round(self.rate, 1),
            "seconds": round(self.seconds, 3),
        }
        if self.reason:
            doc["full_because"] = self.reason
        return doc


# --- counting, consistently with find ----------------------------------------------------------


def count_events(store: Store, query: Mapping[str, Any]) -> int:
    """Events matching `query`, counted with the same date comparison as `find` uses."""
    return store.count(store.events, dict(query))


def newest_ts(store: Store) -> datetime | None:
    """The largest `ts` in the log (from the `ts` index), or None for an empty log."""
    doc = store.events.find_one({}, {"ts": 1, "_id": 0}, sort=[("ts", -1)])
    ts = doc.get("ts") if doc else None
    return ts if isinstance(ts, datetime) else None


# --- the checkpoint ------------------------------------------------------------------------------


def checkpoints(store: Store) -> Collection[Doc]:
    """The collection of projection checkpoints."""
    return store.collection(PROJECTIONS)


def load_checkpoint(store: Store) -> Doc | None:
    """The sessions projection's checkpoint, if a rebuild ever finished."""
    return checkpoints(store).find_one({"_id": PROJECTION_ID})


def projection_status(store: Store) -> dict[str, Any]:
    """When the projection was last rebuilt, how, and how many events it lags behind the log.

    `lag` counts events with a `ts` after the newest event the last run applied (None before any
    run); events published with an older `ts` than that are not counted.
    """
    checkpoint = load_checkpoint(store)
    if checkpoint is None:
        return {"last_run_at": None, "mode": None, "lag": None}
    last = checkpoint.get("last_event_ts")
    lag = count_events(store, {"ts": {"$gt": last}} if isinstance(last, datetime) else {})
    return {
        "last_run_at": checkpoint.get("last_run_at"),
        "mode": checkpoint.get("mode"),
        "lag": lag,
    }


def save_checkpoint(store: Store, plan: Plan, report: RebuildReport) -> None:
    """Record a finished run: one whole-document write, so dates stay BSON dates on nx-27017."""
    doc: Doc = {
        "_id": PROJECTION_ID,
        "mode": report.mode,
        "last_run_at": now_utc(),
        "since": plan.next_since,
        "covered": plan.covered,
        "last_event_ts": report.last_event_ts,
        "margin_seconds": plan.margin,
        "streams": report.streams,
        "events": report.events,
        "written": report.written,
        "removed": report.removed,
        "seconds": round(report.seconds, 3),
    }
    checkpoints(store).replace_one({"_id": PROJECTION_ID}, doc, upsert=True)


# --- planning ------------------------------------------------------------------------------------


def plan_rebuild(store: Store, *, incremental: bool, margin: float = DEFAULT_MARGIN) -> Plan:
    """Decide between a full and an incremental run, and count what the checkpoint will cover.

    Why incremental runs equal full rebuilds. Event `ts` values come from publishers' clocks, and
    an insert becomes visible a little after its `ts` was taken, so a log read "after time T"
    can miss events that land later with a `ts` before T. Three things make that harmless:

    1. A safety margin: the checkpoint time is `margin` seconds before the newest event (or before
       now, if that is earlier), and the next run reads every event from there on again. Events
       read twice are skipped by version: the session holds the last version applied to it.
    2. A count: the checkpoint records how many events had a `ts` before the checkpoint time
       when the run began. The next incremental run counts them again first; any difference
       means events landed behind the checkpoint (published late, with an old `ts`, or deleted),
       and the run becomes a full rebuild, saying why. So correctness does not rest on clocks.
    3. Gaps: if a stream's new events do not continue its session's version (an event of it
       landed behind the window), that stream is refolded from the log past its version.

    Counts are taken before the log is read, so nothing counted can escape the read. The log is
    append-only: an incremental run does not look for deletions inside the window (nor for one
    deletion that a late event behind the checkpoint cancels out); a full rebuild after deleting
    events from the log makes the projection exact again.
    """
    started = time.perf_counter()
    horizon = now_utc()
    newest = newest_ts(store)
    if newest is not None and newest < horizon:
        horizon = newest
    next_since = horizon - timedelta(seconds=margin)
    reason: str | None = None
    if incremental:
        checkpoint = load_checkpoint(store)
        reason = _why_not_incremental(store, checkpoint)
        if reason is None:
            assert checkpoint is not None
            since: datetime = checkpoint["since"]
            next_since = max(since, next_since)
            window = count_events(store, {"ts": {"$gte": since, "$lt": next_since}})
            last = checkpoint.get("last_event_ts")
            return Plan(
                mode="incremental",
                since=since,
                next_since=next_since,
                covered=int(checkpoint["covered"]) + window,
                total=count_events(store, {"ts": {"$gte": since}}),
                last_event_ts=last if isinstance(last, datetime) else None,
                margin=margin,
                started=started,
            )
    return Plan(
        mode="full",
        next_since=next_since,
        covered=count_events(store, {"ts": {"$lt": next_since}}),
        total=store.events.estimated_document_count(),
        reason=reason,
        margin=margin,
        started=started,
    )


def _why_not_incremental(store: Store, checkpoint: Doc | None) -> str | None:
    """Why an incremental run cannot continue from the checkpoint, or None when it can."""
    if checkpoint is None:
        return "no earlier rebuild to continue from"
    since, covered = checkpoint.get("since"), checkpoint.get("covered")
    if not isinstance(since, datetime) or not isinstance(covered, int):
        return "the checkpoint in evstream_projections is not one evstream wrote"
    behind = count_events(store, {"ts": {"$lt": since}})
    if behind != covered:
        return (
            f"the log holds {behind:,} events before the checkpoint, not {covered:,} "
            "(events published late or with an old ts, or deleted)"
        )
    if covered and store.collection(SESSIONS).find_one({}, {"_id": 1}) is None:
        return "the sessions collection is empty"
    return None


# --- running -------------------------------------------------------------------------------------


def rebuild(
    store: Store,
    plan: Plan,
    *,
    dry_run: bool = False,
    batch_size: int | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> RebuildReport:
    """Carry out a plan; then, unless it is a dry run, save the checkpoint.

    The report's seconds count from the start of planning.
    """
    report = RebuildReport(mode=plan.mode, dry_run=dry_run, reason=plan.reason)
    writer = SessionWriter(
        store,
        report,
        dry_run=dry_run,
        full=plan.mode == "full",
        batch_size=batch_size or WRITE_BATCH,
    )
    if plan.mode == "full":
        _full(store, writer, report, progress)
    else:
        report.last_event_ts = plan.last_event_ts
        _incremental(store, plan, writer, report, progress)
    writer.finish()
    report.seconds = time.perf_counter() - plan.started
    if not dry_run:
        save_checkpoint(store, plan, report)
    return report


def _full(
    store: Store, writer: SessionWriter, report: RebuildReport, progress: Callable[[int], None]
) -> None:
    """Fold every stream of the log and merge the result into `sessions`."""
    log = (
        store.events.find({}, EVENT_FIELDS)
        .sort([("stream", 1), ("version", 1)])
        .batch_size(READ_BATCH)
    )
    existing = SortedSessions(sessions_by_id(store.collection(SESSIONS)))
    for stream, state in fold_streams(log, report, progress):
        report.streams += 1
        for gone in existing.before(stream):
            writer.remove(gone)
        writer.put(stream, state, existing.take(stream))
    for gone in existing.rest():
        writer.remove(gone)


def fold_streams(
    log: Iterable[Doc], report: RebuildReport, progress: Callable[[int], None]
) -> Iterator[tuple[str, sessions.State]]:
    """(stream, state) for each stream of a log read in (stream, version) order."""
    stream: str | None = None
    state: sessions.State | None = None
    pending: list[Doc] = []
    newest = report.last_event_ts
    read = 0
    for event in log:
        read += 1
        if read == FOLD_BATCH:
            report.events += read
            progress(read)
            read = 0
        name = event["stream"]
        if name != stream:
            if stream is not None:
                if not name > stream:
                    raise _order_error("events", stream, name)
                yield stream, sessions.fold(pending, state)
            stream, state, pending = name, None, []
        elif len(pending) == FOLD_BATCH:
            state, pending = sessions.fold(pending, state), []
        pending.append(event)
        ts = event.get("ts")
        if isinstance(ts, datetime) and (newest is None or ts > newest):
            newest = ts
    report.events += read
    report.applied = report.events
    progress(read)
    report.last_event_ts = newest
    if stream is not None:
        yield stream, sessions.fold(pending, state)


def _order_error(what: str, before: Any, after: Any) -> EvstreamError:
    return EvstreamError(
        f"the server returned {what} {after!r} after {before!r}: not in the binary string "
        "order a merge needs (is a non-simple collation set on the collection?)"
    )


def sessions_by_id(coll: Collection[Doc]) -> Iterator[Doc]:
    """All sessions in `_id` order, through one cursor.

    The cursor can sit idle while the log is read (long streams) and the server may time it out;
    it is then reopened past the last session seen.
    """
    last: str | None = None
    while True:
        query = {} if last is None else {"_id": {"$gt": last}}
        try:
            for doc in coll.find(query).sort("_id", 1).batch_size(READ_BATCH):
                if isinstance(doc["_id"], str):
                    last = doc["_id"]
                yield doc
            return
        except CursorNotFound:
            continue


class SortedSessions:
    """The stored sessions in `_id` order, consumed alongside the log's streams."""

    def __init__(self, cursor: Iterable[Doc]) -> None:
        self._docs = iter(cursor)
        self._head: Doc | None = next(self._docs, None)
        self._last: str | None = None

    def _pop(self) -> Doc:
        assert self._head is not None
        doc = self._head
        key = doc["_id"]
        if isinstance(key, str):
            if self._last is not None and not key > self._last:
                raise _order_error("sessions", self._last, key)
            self._last = key
        self._head = next(self._docs, None)
        return doc

    def before(self, stream: str) -> Iterator[Doc]:
        """Sessions ordered before `stream` (no stream of the log has them), then stop."""
        while self._head is not None and not (
            isinstance(self._head["_id"], str) and self._head["_id"] >= stream
        ):
            yield self._pop()

    def take(self, stream: str) -> Doc | None:
        """The stored session of `stream`, if the next one is it."""
        if self._head is not None and self._head["_id"] == stream:
            return self._pop()
        return None

    def rest(self) -> Iterator[Doc]:
        """Sessions after the last stream of the log."""
        while self._head is not None:
            yield self._pop()


def _incremental(
    store: Store,
    plan: Plan,
    writer: SessionWriter,
    report: RebuildReport,
    progress: Callable[[int], None],
) -> None:
    """Apply the events of the window (from the checkpoint on), chunk by chunk."""
    assert plan.since is not None
    window = (
        store.events.find({"ts": {"$gte": plan.since}}, EVENT_FIELDS)
        .sort("ts", 1)
        .batch_size(READ_BATCH)
    )
    coll = store.collection(SESSIONS)
    chunk: list[Doc] = []
    for event in window:
        chunk.append(event)
        if len(chunk) == CHUNK_EVENTS:
            _apply_chunk(store, coll, chunk, writer, report, progress)
            chunk = []
    _apply_chunk(store, coll, chunk, writer, report, progress)


def _apply_chunk(
    store: Store,
    coll: Collection[Doc],
    chunk: list[Doc],
    writer: SessionWriter,
    report: RebuildReport,
    progress: Callable[[int], None],
) -> None:
    """Bring the sessions of the streams in `chunk` up to date with the log."""
    if not chunk:
        return
    by_stream: dict[str, list[Doc]] = {}
    newest = report.last_event_ts
    for event in chunk:
        by_stream.setdefault(event["stream"], []).append(event)
        ts = event.get("ts")
        if isinstance(ts, datetime) and (newest is None or ts > newest):
            newest = ts
    report.last_event_ts = newest
    stored = {doc["_id"]: doc for doc in coll.find({"_id": {"$in": list(by_stream)}})}
    for stream, events in by_stream.items():
        old = writer.preview_of(stream) or stored.get(stream)
        base = old if old is not None and sessions.is_state(old) else None
        applied = base["version"] if base is not None and isinstance(base["version"], int) else 0
        fresh = sorted((e for e in events if e["version"] > applied), key=lambda e: e["version"])
        if not fresh:
            continue
        if any(e["version"] != applied + 1 + i for i, e in enumerate(fresh)):
            # Some event of this stream is not in the window (it landed late, behind it): read
            # everything the session lacks from the log instead.
            fresh = list(
                store.events.find({"stream": stream, "version": {"$gt": applied}}, EVENT_FIELDS)
                .sort("version", 1)
                .batch_size(READ_BATCH)
            )
        report.streams += 1
        report.applied += len(fresh)
        writer.put(stream, sessions.fold(fresh, base), old)
    writer.flush()
    report.events += len(chunk)
    progress(len(chunk))


# --- writing -------------------------------------------------------------------------------------


@dataclass
class SessionWriter:
    """Writes whole sessions in bulk, never moving one back to an older version; counts it all.

    A full rebuild is authoritative (`full`): where a stored session is ahead of the log (events
    were deleted from the stream), it is replaced anyway. In a dry run nothing is written; an
    incremental dry run remembers what it would have written, as later chunks read it back.
    """

    store: Store
    report: RebuildReport
    dry_run: bool = False
    full: bool = True
    batch_size: int = WRITE_BATCH
    _puts: list[tuple[Doc, Doc | None]] = field(default_factory=list)
    _gone: list[Any] = field(default_factory=list)
    _preview: dict[str, Doc] = field(default_factory=dict)

    @property
    def coll(self) -> Collection[Doc]:
        """The sessions collection."""
        return self.store.collection(SESSIONS)

    def preview_of(self, stream: str) -> Doc | None:
        """In an incremental dry run, the session this run would have written for `stream`."""
        return self._preview.get(stream)

    def put(self, stream: str, state: sessions.State, old: Doc | None) -> None:
        """Make `stream`'s session `state`, unless it already is."""
        doc: Doc = {"_id": stream, **state}
        if old == doc:
            self.report.unchanged += 1
            return
        if self.dry_run:
            if not self.full:
                seen = stream in self._preview  # counted already, in an earlier chunk
                self._preview[stream] = doc
                if seen:
                    return
            self._count(old is None)
            return
        self._puts.append((doc, old))
        if len(self._puts) >= self.batch_size:
            self.flush()

    def remove(self, doc: Doc) -> None:
        """Delete a session whose stream has no events (checked against the log first)."""
        self._gone.append(doc["_id"])
        if len(self._gone) >= self.batch_size:
            self._flush_gone()

    def finish(self) -> None:
        """Write what is still buffered."""
        self.flush()
        self._flush_gone()

    def _count(self, created: bool) -> None:
        if created:
            self.report.created += 1
        else:
            self.report.updated += 1

    def flush(self) -> None:
        """Write the buffered sessions in one unordered bulk write."""
        puts, self._puts = self._puts, []
        if not puts:
            return
        # A session that was not there when read is inserted (cheaper than an upsert); if a
        # concurrent run inserted it meanwhile, the duplicate key sends it to _resolve.
        ops = [
            InsertOne(doc)
            if old is None
            else ReplaceOne(
                {"_id": doc["_id"], "version": {"$lte": doc["version"]}}, doc, upsert=True
            )
            for doc, old in puts
        ]
        failed: set[int] = set()
        try:
            self.coll.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            errors = (exc.details or {}).get("writeErrors") or []
            if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            failed = {int(e["index"]) for e in errors}
        for i, (doc, old) in enumerate(puts):
            if i in failed:
                self._resolve(doc)
            else:
                self._count(old is None)

    def _resolve(self, doc: Doc) -> None:
        """A conditional write found a newer (or racing) session: decide, retry, or give way."""
        stream, version = doc["_id"], doc["version"]
        for _ in range(MAX_WRITE_ATTEMPTS):
            stored = self.coll.find_one({"_id": stream})
            if stored is None:
                try:
                    self.coll.insert_one(doc)
                    self.report.created += 1
                    return
                except DuplicateKeyError:
                    continue
            held = stored.get("version")
            if isinstance(held, int) and held > version:
                if not self.full or stream_head(self.store, stream) >= held:
                    self.report.superseded += 1  # a concurrent run applied more already
                    return
                condition: Doc = {"_id": stream, "version": held}
            elif isinstance(held, int):
                condition = {"_id": stream, "version": held}
            else:
                condition = {"_id": stream}  # not a session evstream wrote
            if self.coll.replace_one(condition, doc).matched_count:
                self.report.updated += 1
                return
        raise EvstreamError(
            f"could not write the session of stream {stream!r}: "
            f"{MAX_WRITE_ATTEMPTS} attempts raced other writers"
        )

    def _flush_gone(self) -> None:
        ids, self._gone = self._gone, []
        if not ids:
            return
        # A stream may have got its first events since the log was read: keep its session.
        alive = {
            row["_id"]
            for row in self.store.events.aggregate(
                [{"$match": {"stream": {"$in": ids}}}, {"$group": {"_id": "$stream"}}]
            )
        }
        dead = [i for i in ids if i not in alive]
        if not dead:
            return
        if self.dry_run:
            self.report.removed += len(dead)
            return
        self.report.removed += self.coll.delete_many({"_id": {"$in": dead}}).deleted_count
