"""The projection engine: full and incremental rebuilds of any `Projection` from the event log.

Why each run is online, kill-safe, bounded in memory and equal to a full rebuild whatever mix of
runs came before: docs/projections.md. In short, each document is written whole and
conditionally on its version, the full rebuild is a merge join of the log (in stream, version
order) with the stored documents (in `_id` order), and the checkpoint is written last, by a run
that finished, with a count of the events it covers.

Every read and write goes through `evstream.storage.projections`; nothing here names a
projection or asks which server it talks to.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from evstream.errors import EvstreamError
from evstream.events import TS_DISORDER, UNSORTED, Skipped, event_problem, part_of_stream
from evstream.interrupts import CTRL_C
from evstream.liveness import Pulse
from evstream.projections import Projection, builtin_projection
from evstream.reporting import Progress, Status, ignore, no_progress, no_status
from evstream.storage import Store, ensure_indexes, now_utc
from evstream.storage import keyed as db_keyed
from evstream.storage import projections as db
from evstream.storage.codec import aware
from evstream.storage.projections import EVENT_FIELDS, READ_BATCH

if TYPE_CHECKING:
    from evstream.archiving import Starts

__all__ = [
    "EVENT_FIELDS",
    "READ_BATCH",
    "Plan",
    "RebuildReport",
    "checkpoint_key",
    "plan_rebuild",
    "projection_status",
    "projections_status",
    "follow_projection",
    "rebuild",
    "run_rebuild",
]

DEFAULT_MARGIN = 10.0
WRITE_BATCH = 5000
# An incremental run reads new events in chunks of this many, so its memory stays bounded.
CHUNK_EVENTS = 20_000
FOLD_BATCH = 1000

Doc = dict[str, Any]
Part = tuple[int, int]


def checkpoint_key(projection: Projection, part: Part | None) -> str:
    """The checkpoint's `_id`: the projection's name, with `part I of N` for a partition."""
    return projection.name if part is None else f"{projection.name} part {part[0]} of {part[1]}"


def in_part(key: Any, part: Part | None) -> bool:
    """Whether a stream (or a stored document's `_id`, which is its stream) belongs to this
    part, by the rule watch and the API use too (`evstream.events.part_of_stream`)."""
    return part is None or part_of_stream(key, part[1]) == part[0]


# --- what a run does and reports ---------------------------------------------------------------


@dataclass
class Plan:
    """What a rebuild will do, decided before it reads anything (so the counts come first).

    `next_since` becomes the checkpoint's time. `covered` is what the checkpoint covered before
    this run (0 for a full one); the run adds each event it reads with a `ts` before
    `next_since` (docs/projections.md, "Incremental equals full").
    """

    projection: Projection
    mode: str
    next_since: datetime
    covered: int
    total: int | None
    part: Part | None = None
    since: datetime | None = None
    last_event_ts: datetime | None = None
    reason: str | None = None
    margin: float = DEFAULT_MARGIN
    started: float = field(default_factory=time.perf_counter)


@dataclass
class RebuildReport:
    """The account of a rebuild, shown as its summary."""

    mode: str
    projection: str = ""
    collection: str = ""
    part: Part | None = None
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
    skipped: Skipped = field(default_factory=Skipped)
    counted: int = 0  # events read with a ts before the plan's next_since
    checkpoint: Doc | None = field(default=None, repr=False)  # the one saved, if any
    upcasted: dict[str, int] = field(default_factory=dict)  # events each upcaster changed
    key: str | None = None  # a keyed projection's key (then `streams` counts keys)
    without_key: int = 0  # events of a keyed projection without its key, skipped

    @property
    def written(self) -> int:
        """Documents written (or, in a dry run, that would be)."""
        return self.created + self.updated

    @property
    def rate(self) -> float:
        """Events read per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready object."""
        doc: dict[str, Any] = {
            "projection": self.projection,
            "collection": self.collection,
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
            "skipped": self.skipped.as_dict(),
            "events_per_second": round(self.rate, 1),
            "seconds": round(self.seconds, 3),
        }
        if self.part is not None:
            doc["partition"] = f"{self.part[0]}/{self.part[1]}"
        if self.reason:
            doc["full_because"] = self.reason
        if self.upcasted:
            doc["upcasted"] = dict(self.upcasted)
        if self.key is not None:
            doc["key"] = self.key
            doc["keys"] = doc.pop("streams")
            doc["without_key"] = self.without_key
        return doc


# --- status ------------------------------------------------------------------------------------


def projections_status(store: Store) -> list[dict[str, Any]]:
    """Every projection (part) with a checkpoint: name, collection, version, last run, mode, lag.

    `lag` counts events of the projection's types with a `ts` after the newest event its last
    run applied; events published with an older `ts` than that are not counted.
    """
    rows = []
    for checkpoint in db.all_checkpoints(store):
        last = checkpoint.get("last_event_ts")
        types = checkpoint.get("types")
        rows.append(
            {
                "name": checkpoint.get("projection", checkpoint["_id"]),
                "checkpoint": checkpoint["_id"],
                "collection": checkpoint.get("collection", checkpoint["_id"]),
                "version": checkpoint.get("fold_version"),
                "partition": checkpoint.get("partition"),
                "last_run_at": checkpoint.get("last_run_at"),
                "mode": checkpoint.get("mode"),
                "lag": db.count_after(
                    store,
                    types if isinstance(types, list) else None,
                    last if isinstance(last, datetime) else None,
                ),
            }
        )
    return rows


def projection_status(store: Store, name: str = "sessions") -> dict[str, Any]:
    """One projection's last run, how, and its lag (None before any run).

    `status` calls it for `sessions` today (overview.py); `projections_status` lists them all.
    """
    checkpoint = db.load_checkpoint(store, name)
    if checkpoint is None:
        return {"last_run_at": None, "mode": None, "lag": None}
    last = checkpoint.get("last_event_ts")
    types = checkpoint.get("types")
    lag = db.count_after(
        store,
        types if isinstance(types, list) else None,
        last if isinstance(last, datetime) else None,
    )
    return {
        "last_run_at": checkpoint.get("last_run_at"),
        "mode": checkpoint.get("mode"),
        "lag": lag,
    }


# --- planning ------------------------------------------------------------------------------------


def plan_rebuild(
    store: Store,
    projection: Projection | None = None,
    *,
    incremental: bool,
    margin: float = DEFAULT_MARGIN,
    part: Part | None = None,
    with_total: bool = True,
) -> Plan:
    """Decide between a full and an incremental run, and count what the checkpoint will cover.

    Why counting makes incremental runs equal full ones: docs/projections.md, "Incremental
    equals full". `with_total` counts the events the run will read, for a progress bar.
    """
    # Without one: the built-in projection, for callers written before there were others.
    proj = projection or builtin_projection("sessions")
    types = proj.read_types
    started = time.perf_counter()
    horizon = now_utc()
    newest = db.newest_ts(store, types)
    if newest is not None and newest < horizon:
        horizon = newest
    next_since = store.checkpoint_time(horizon - timedelta(seconds=margin))
    reason: str | None = None
    if incremental:
        checkpoint = db.load_checkpoint(store, checkpoint_key(proj, part))
        reason = _why_not_incremental(store, proj, checkpoint)
        if reason is None:
            assert checkpoint is not None
            since: datetime = checkpoint["since"]
            next_since = max(since, next_since)
            last = checkpoint.get("last_event_ts")
            return Plan(
                projection=proj,
                mode="incremental",
                part=part,
                since=since,
                next_since=next_since,
                covered=int(checkpoint["covered"]),
                total=db.count_events(store, types, since=since) if with_total else None,
                last_event_ts=last if isinstance(last, datetime) else None,
                margin=margin,
                started=started,
            )
    return Plan(
        projection=proj,
        mode="full",
        part=part,
        next_since=next_since,
        covered=0,
        total=db.count_events(store, types) if with_total else None,
        reason=reason,
        margin=margin,
        started=started,
    )


def _why_not_incremental(store: Store, proj: Projection, checkpoint: Doc | None) -> str | None:
    """Why an incremental run cannot continue from the checkpoint, or None when it can."""
    if checkpoint is None:
        return "no earlier rebuild to continue from"
    since, covered = checkpoint.get("since"), checkpoint.get("covered")
    if not isinstance(since, datetime) or type(covered) is not int:
        return "the checkpoint in evstream_projections is not one evstream wrote"
    recorded = checkpoint.get("fold_version")
    if recorded != proj.version:
        was = "none recorded" if recorded is None else f"was {recorded}"
        return f"the projection's version is now {proj.version} ({was})"
    declared = None if proj.read_types is None else list(proj.read_types)
    if checkpoint.get("types") != declared or checkpoint.get("collection") != proj.collection:
        return "the projection's types or collection changed since the last run"
    if checkpoint.get("key") != proj.key:
        return "the projection's key changed since the last run"
    behind = db.count_events(store, proj.read_types, before=since)
    if behind != covered:
        return (
            f"the log holds {behind:,} events before the checkpoint, not {covered:,} "
            "(events published late or with an old ts, or deleted)"
        )
    if covered and not db.has_documents(store, proj.collection):
        return f"the {proj.collection} collection is empty"
    return None


# --- running -------------------------------------------------------------------------------------


def rebuild(
    store: Store,
    plan: Plan,
    *,
    dry_run: bool = False,
    batch_size: int | None = None,
    progress: Callable[[int], None] = lambda n: None,
    count_not_events: bool = True,
    extra: Callable[[], Doc] | None = None,
) -> RebuildReport:
    """Carry out a plan; then, unless it is a dry run, save the checkpoint (with `extra()`'s
    fields, a follower's liveness, in it).

    An incremental run counts the log's documents that are not events with one more query
    (a full run counts them as it reads), unless `count_not_events` is False (a follower's
    periodic checkpoint, which reports none).

    The report's seconds count from the start of planning. A handler that raises stops the run
    (`HandlerFailed`) before anything of its stream is written, and no checkpoint is saved.
    """
    proj = plan.projection
    report = RebuildReport(
        mode=plan.mode,
        projection=proj.name,
        collection=proj.collection,
        part=plan.part,
        dry_run=dry_run,
        reason=plan.reason,
        key=proj.key,
    )
    writer = Writer(
        store,
        proj,
        report,
        dry_run=dry_run,
        full=plan.mode == "full",
        batch_size=batch_size or WRITE_BATCH,
    )
    upcast_before = dict(proj.upcasters.counts)
    try:
        if proj.key is not None:
            _keyed(store, plan, report, dry_run, progress, count_not_events)
        elif plan.mode == "full":
            _full(store, plan, writer, report, progress)
        else:
            report.last_event_ts = plan.last_event_ts
            _incremental(store, plan, writer, report, progress, count_not_events)
        writer.finish()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (evstream.interrupts)
        done = (
            "nothing was written (a dry run)"
            if dry_run
            else f"{report.written:,} document(s) written; no checkpoint saved, so the next "
            "run (full or --incremental) finishes the job"
        )
        raise CTRL_C.stopped(
            f"rebuilding {proj.name} ({plan.mode}): {report.applied:,} "
            f"event{'s' * (report.applied != 1)} applied, {done}"
        ) from None
    report.seconds = time.perf_counter() - plan.started
    report.upcasted = proj.upcasters.changes_since(upcast_before)
    if not dry_run:
        report.checkpoint = {**_checkpoint(plan, report), **(extra() if extra else {})}
        db.save_checkpoint(store, report.checkpoint)
    return report


def _keyed(
    store: Store,
    plan: Plan,
    report: RebuildReport,
    dry_run: bool,
    progress: Callable[[int], None],
    count_not_events: bool,
) -> None:
    """A keyed projection's run (evstream/keyed.py)."""
    from evstream import keyed

    archive_starts(store, plan.projection)  # refuses a log an archive truncated (exit 4)
    writer = keyed.KeyedWriter(store, plan.projection, report, dry_run=dry_run)
    if plan.mode == "full":
        keyed.full(store, plan, report, writer, progress)
    else:
        report.last_event_ts = plan.last_event_ts
        keyed.incremental(store, plan, report, writer, progress, count_not_events)
    writer.flush()


def _checkpoint(plan: Plan, report: RebuildReport) -> Doc:
    proj = plan.projection
    return {
        "key": proj.key,
        "_id": checkpoint_key(proj, plan.part),
        "projection": proj.name,
        "collection": proj.collection,
        "fold_version": proj.version,
        "types": None if proj.read_types is None else list(proj.read_types),
        "partition": None if plan.part is None else f"{plan.part[0]}/{plan.part[1]}",
        "mode": report.mode,
        "last_run_at": now_utc(),
        "since": plan.next_since,
        "covered": plan.covered + report.counted,
        "last_event_ts": report.last_event_ts,
        "margin_seconds": plan.margin,
        "streams": report.streams,
        "events": report.events,
        "written": report.written,
        "removed": report.removed,
        "skipped": report.skipped.total,
        "seconds": round(report.seconds, 3),
    }


def _full(
    store: Store,
    plan: Plan,
    writer: Writer,
    report: RebuildReport,
    progress: Callable[[int], None],
) -> None:
    """Fold every stream (of this part) and merge the result into the projection's collection."""
    proj, part = plan.projection, plan.part
    starts = archive_starts(store, proj)
    log = db.read_log(store, proj.read_types)
    existing = SortedDocuments(db.stored_documents(store, proj.collection))
    versioned = store.fieldmap.versioned
    for stream, state in fold_streams(
        proj, log, report, progress, part, plan.next_since, starts=starts, versioned=versioned
    ):
        report.streams += 1
        for gone in existing.before(stream):
            if in_part(gone["_id"], part):
                writer.remove(gone)
        writer.put(stream, state, existing.take(stream))
    for gone in existing.rest():
        if in_part(gone["_id"], part):
            writer.remove(gone)


def fold_streams(
    proj: Projection,
    log: Iterable[Doc],
    report: RebuildReport,
    progress: Callable[[int], None],
    part: Part | None = None,
    before: datetime | None = None,
    *,
    starts: Starts | None = None,
    versioned: bool = True,
) -> Iterator[tuple[str, Doc]]:
    """(stream, state) for each stream of a log read in (stream, version) order (on a log
    without versions, `versioned` False: (stream, ts, id) order).

    Documents that are not events (`event_problem`) are skipped and counted; streams of other
    parts are passed over. A stream's events are folded a batch at a time, so a long stream
    never sits in memory whole. Every document read with a date `ts` before `before` is counted
    in `report.counted`, as the server's count would count it.

    With `starts` (after an archive, docs/lifecycle.md), a stream's fold starts from its
    snapshot at the archive's edge, versions up to the edge are passed over (they are in the
    snapshot, whether or not still in the log), and a stream whose events were all archived is
    its snapshot.
    """
    fold = proj.fold if versioned else _unversioned_fold(proj)
    prepare, upcasting = proj.prepare, bool(proj.upcasters)
    stream: str | None = None
    state: Doc | None = None
    pending: list[Doc] = []
    newest = report.last_event_ts
    read = 0
    skipped = report.skipped
    mine: dict[str, bool] = {}
    counted = 0
    edge = 0
    for event in log:
        read += 1
        if read == FOLD_BATCH:
            report.events += read
            progress(read)
            read = 0
        if before is not None:
            ts = event.get("ts")
            if isinstance(ts, datetime) and ts < before:
                counted += 1
        problem = event_problem(event, versioned)
        if problem is not None:
            skipped.add(event, problem)
            continue
        name = event["stream"]
        if name != stream:
            if stream is not None:
                if not name > stream:
                    raise _order_error("events", stream, name)
                if pending or state is not None:
                    yield stream, fold(pending, state)
            stream, state, pending = name, None, []
            if part is not None:
                mine = {name: in_part(name, part)}
            if starts is not None:
                for snap in starts.before(name):
                    if in_part(snap["stream"], part):
                        yield snap["stream"], snap["state"]
                snap = starts.take(name)
                state = dict(snap["state"]) if snap is not None else None
                edge = int(snap["through"]) if snap is not None else 0
        if part is not None and not mine[name]:
            continue
        if starts is not None and event["version"] <= edge:
            continue  # in the snapshot (archived, or restored from an archive)
        if upcasting:
            event = prepare(event)
            if event is None:
                continue  # upcast into a type the projection does not read
        if len(pending) == FOLD_BATCH:
            state, pending = fold(pending, state), []
        pending.append(event)
        report.applied += 1
        ts = event["ts"]
        if newest is None or ts > newest:
            newest = ts
    report.events += read
    report.counted += counted
    progress(read)
    report.last_event_ts = newest
    if stream is not None and (pending or state is not None):
        yield stream, fold(pending, state)
    if starts is not None:
        for snap in starts.before(None):
            if in_part(snap["stream"], part):
                yield snap["stream"], snap["state"]


def archive_starts(
    store: Store, proj: Projection, streams: list[str] | None = None
) -> Starts | None:
    """Where full folds start after an archive (None for a log never archived); refuses (exit 4)
    a projection that archived events are missing from (docs/lifecycle.md)."""
    from evstream.archiving import Starts, require_snapshots
    from evstream.storage import lifecycle

    if not lifecycle.archive_runs_exist(store):
        return None
    require_snapshots(store, proj)
    return Starts(store, proj, streams)


def _unversioned_fold(proj: Projection) -> Callable[[list[Doc], Doc | None], Doc]:
    """The fold on a log without versions: events carry no version, and the document's
    `version` counts the events applied (its `events`), so writes still never move it back
    (docs/adopting.md, "Logs without versions")."""

    def fold(events: list[Doc], state: Doc | None) -> Doc:
        folded = proj.fold(events, state)
        folded["version"] = folded["events"]
        return folded

    return fold


def _order_error(what: str, before: Any, after: Any) -> EvstreamError:
    return EvstreamError(
        f"the server returned {what} {after!r} after {before!r}: not in the binary string "
        "order a merge needs (is a non-simple collation set on the collection?)"
    )


class SortedDocuments:
    """The stored documents in `_id` order, consumed alongside the log's streams."""

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
                raise _order_error("documents", self._last, key)
            self._last = key
        self._head = next(self._docs, None)
        return doc

    def before(self, stream: str) -> Iterator[Doc]:
        """Documents ordered before `stream` (no stream of the log has them), then stop."""
        while self._head is not None and not (
            isinstance(self._head["_id"], str) and self._head["_id"] >= stream
        ):
            yield self._pop()

    def take(self, stream: str) -> Doc | None:
        """The stored document of `stream`, if the next one is it."""
        if self._head is not None and self._head["_id"] == stream:
            return self._pop()
        return None

    def rest(self) -> Iterator[Doc]:
        """Documents after the last stream of the log."""
        while self._head is not None:
            yield self._pop()


def _incremental(
    store: Store,
    plan: Plan,
    writer: Writer,
    report: RebuildReport,
    progress: Callable[[int], None],
    count_not_events: bool = True,
) -> None:
    """Apply the events of the window (from the checkpoint on), chunk by chunk."""
    assert plan.since is not None
    window = db.read_window(store, plan.projection.read_types, plan.since)
    chunk: list[Doc] = []
    for event in window:
        chunk.append(event)
        if len(chunk) == CHUNK_EVENTS:
            _apply_chunk(store, plan, chunk, writer, report, progress)
            chunk = []
    _apply_chunk(store, plan, chunk, writer, report, progress)
    # The window holds only documents with a ts from `since` on: those that are not events
    # are counted over the whole log instead, as a full run counts them (one rule).
    report.skipped = Skipped()
    if not count_not_events:
        return
    versioned = store.fieldmap.versioned
    for doc in db.read_not_events(store, plan.projection.read_types):
        report.skipped.add(doc, event_problem(doc, versioned) or UNSORTED)


def _apply_chunk(
    store: Store,
    plan: Plan,
    chunk: list[Doc],
    writer: Writer,
    report: RebuildReport,
    progress: Callable[[int], None],
) -> None:
    """Bring the documents of the streams in `chunk` up to date with the log."""
    if not chunk:
        return
    proj, part = plan.projection, plan.part
    by_stream: dict[str, list[Doc]] = {}
    newest = report.last_event_ts
    versioned = store.fieldmap.versioned
    for event in chunk:
        ts = event.get("ts")
        if isinstance(ts, datetime) and ts < plan.next_since:
            report.counted += 1
        problem = event_problem(event, versioned)
        if problem is not None:
            report.skipped.add(event, problem)
            continue
        if not in_part(event["stream"], part):
            continue
        event = proj.prepare(event)
        if event is None:
            continue  # upcast into a type the projection does not read
        by_stream.setdefault(event["stream"], []).append(event)
        if newest is None or event["ts"] > newest:
            newest = event["ts"]
    report.last_event_ts = newest
    update_streams(store, proj, by_stream, writer, report)
    writer.flush()
    report.events += len(chunk)
    progress(len(chunk))


def update_streams(
    store: Store,
    proj: Projection,
    by_stream: dict[str, list[Doc]],
    writer: Writer,
    report: RebuildReport,
) -> None:
    """Apply each stream's new events (valid ones, of this part) onto its stored document."""
    stored = db.find_documents(store, proj.collection, list(by_stream)) if by_stream else {}
    from_log: list[str] = []  # streams whose documents are refolded from the log
    versioned = store.fieldmap.versioned
    if not versioned:
        _update_unversioned(store, proj, by_stream, stored, writer, report, from_log)
    for stream, events in by_stream.items() if versioned else ():
        old = writer.preview_of(stream) or stored.get(stream)
        base = old if old is not None and proj.is_state(old) else None
        applied = base["version"] if base is not None else 0
        fresh = sorted((e for e in events if e["version"] > applied), key=lambda e: e["version"])
        if not fresh:
            continue
        if base is None and proj.types is not None:
            # Of a few types, versions have gaps by design: the document alone says whether the
            # stream has earlier events (of those types) before the window. It is missing or not
            # a state of this fold, so read the stream from the log.
            from_log.append(stream)
            continue
        if proj.types is None and any(e["version"] != applied + 1 + i for i, e in enumerate(fresh)):
            # Some event of this stream is not in the window (it landed late, behind it): read
            # everything the document lacks from the log instead.
            fresh = [
                e
                for e in map(proj.prepare, db.read_stream_after(store, stream, applied, None))
                if e is not None and event_problem(e) is None
            ]
        report.streams += 1
        report.applied += len(fresh)
        writer.put(stream, proj.fold(fresh, base), old)
    if from_log:
        ignored = RebuildReport(mode="incremental")  # counted once, in the window
        for stream, state in fold_streams(
            proj,
            db.read_streams(store, from_log, proj.read_types),
            ignored,
            lambda n: None,
            starts=archive_starts(store, proj, from_log),
            versioned=versioned,
        ):
            report.streams += 1
            report.applied += state["events"]
            writer.put(stream, state, writer.preview_of(stream) or stored.get(stream))


def _update_unversioned(
    store: Store,
    proj: Projection,
    by_stream: dict[str, list[Doc]],
    stored: dict[Any, Doc],
    writer: Writer,
    report: RebuildReport,
    from_log: list[str],
) -> None:
    """`update_streams` on a log without versions, where a stream's order is (ts, id).

    A document's events are those up to its `updated_at` (the ts of the last one applied). When
    every event of the stream in the window is after it, those are exactly the events it lacks:
    an event it lacks with an older ts would be in the window too (it was published after the
    checkpoint's run, and one behind the checkpoint turns the run into a full one, by count).
    Otherwise (an event at or before its ts: read again, or landed late) the stream is refolded
    from the log, as is a stream without a document of this fold (its earlier events may lie
    before the window). Either way it equals the full rebuild's fold.
    """
    order = store.fieldmap.order_key
    fold = _unversioned_fold(proj)
    for stream, events in by_stream.items():
        old = writer.preview_of(stream) or stored.get(stream)
        base = old if old is not None and proj.is_state(old) else None
        last = base.get("updated_at") if base is not None else None
        if not isinstance(last, datetime):
            from_log.append(stream)
            continue
        last = aware(last)
        if any(aware(e["ts"]) <= last for e in events):
            from_log.append(stream)
            continue
        fresh = sorted(events, key=order)
        report.streams += 1
        report.applied += len(fresh)
        writer.put(stream, fold(fresh, base), old)


# --- writing -------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Buffers whole documents and writes them in bulk, never moving one back; counts it all.

    A full rebuild is authoritative (`full`): where a stored document is ahead of the log (events
    were deleted from the stream), it is replaced anyway. In a dry run nothing is written; an
    incremental dry run remembers what it would have written, as later chunks read it back.
    """

    store: Store
    projection: Projection
    report: RebuildReport
    dry_run: bool = False
    full: bool = True
    batch_size: int = WRITE_BATCH
    _puts: list[tuple[Doc, Doc | None]] = field(default_factory=list)
    _gone: list[Any] = field(default_factory=list)
    _preview: dict[str, Doc] = field(default_factory=dict)

    def preview_of(self, stream: str) -> Doc | None:
        """In an incremental dry run, the document this run would have written for `stream`."""
        return self._preview.get(stream)

    def put(self, stream: str, state: Doc, old: Doc | None) -> None:
        """Make `stream`'s document `state`, unless it already is."""
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
            if old is None:
                self.report.created += 1
            else:
                self.report.updated += 1
            return
        self._puts.append((doc, old))
        if len(self._puts) >= self.batch_size:
            self.flush()

    def remove(self, doc: Doc) -> None:
        """Delete a document whose stream has no events (checked against the log first)."""
        self._gone.append(doc["_id"])
        if len(self._gone) >= self.batch_size:
            self._flush_gone()

    def finish(self) -> None:
        """Write what is still buffered."""
        self.flush()
        self._flush_gone()

    def flush(self) -> None:
        """Write the buffered documents in one unordered bulk write."""
        puts, self._puts = self._puts, []
        counts = db.write_documents(
            self.store,
            self.projection.collection,
            puts,
            authoritative=self.full,
            types=self.projection.read_types,
        )
        self.report.created += counts.created
        self.report.updated += counts.updated
        self.report.superseded += counts.superseded

    def _flush_gone(self) -> None:
        ids, self._gone = self._gone, []
        if not ids:
            return
        # A stream may have got its first events since the log was read: keep its document.
        alive = db.live_streams(
            self.store, [i for i in ids if isinstance(i, str)], self.projection.read_types
        )
        dead = [i for i in ids if i not in alive]
        if not dead:
            return
        if self.dry_run:
            self.report.removed += len(dead)
            return
        self.report.removed += db.delete_documents(self.store, self.projection.collection, dead)


# --- following -----------------------------------------------------------------------------------

CHECKPOINT_EVERY = 30.0


@dataclass
class FollowReport:
    """What a `--follow` run did: its catch-up, then the live events it applied."""

    catch_up: RebuildReport
    live: RebuildReport
    checkpoints: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready object."""
        doc = self.catch_up.as_dict()
        doc["mode"] = "follow"
        doc["caught_up"] = {"mode": self.catch_up.mode, "applied": self.catch_up.applied}
        doc["live"] = {
            "events": self.live.events,
            "applied": self.live.applied,
            "written": self.live.written,
            "skipped": self.live.skipped.as_dict(),
        }
        doc["checkpoints"] = self.checkpoints
        return doc


def follow_stopped_line(name: str, report: FollowReport) -> str:
    """What a `--follow` run stopped by Ctrl-C or SIGTERM did, in one line."""
    live = report.live
    return (
        f"following {name}: caught up ({report.catch_up.mode}, {report.catch_up.applied:,} "
        f"event{'s' * (report.catch_up.applied != 1)} applied), then {live.applied:,} live "
        f"event{'s' * (live.applied != 1)} applied ({live.written:,} document(s) written); "
        "checkpoint saved"
    )


class Follower:
    """`rebuild NAME --follow`: catch up (an incremental run), then apply events as they arrive.

    Built on `evstream.watching`'s public `Watcher`, `WatchOptions` and `Hooks`: the watch reads
    the log from the catch-up's checkpoint time, then follows the change stream with the
    watch's handover. Each event is applied to its stream's document as an incremental run
    would (conditionally on the version, so an event delivered twice changes nothing). The
    projection's checkpoint is the incremental run's: it is saved by an incremental run every
    `every` seconds while events arrive and on the way out, so --incremental and --follow
    alternate, and after kill -9 the next start catches up from it (docs/projections.md).
    """

    def __init__(
        self,
        store: Store,
        projection: Projection,
        *,
        part: Part | None = None,
        margin: float = DEFAULT_MARGIN,
        every: float = CHECKPOINT_EVERY,
        notice: Callable[[str], None] = lambda message: None,
        warning: Callable[[str], None] = lambda message: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.projection = projection
        self.part = part
        self.margin = margin
        self.every = every
        self.notice = notice
        self.warning = warning
        self.clock = clock
        self.live = RebuildReport(
            mode="follow",
            projection=projection.name,
            collection=projection.collection,
            part=part,
            key=projection.key,
        )
        self.writer = Writer(store, projection, self.live, full=False, batch_size=1)
        self.keyed_writer: Any = None
        if projection.key is not None:
            from evstream.keyed import KeyedWriter

            self.keyed_writer = KeyedWriter(store, projection, self.live)
        self.saved_at = clock()
        self.checkpoints = 0
        self.started = now_utc() - TS_DISORDER  # set again by `run`
        # Liveness (docs/operating.md): in every checkpoint the follower saves, and the last
        # one written again with fresh liveness every heartbeat in between.
        self.pulse = Pulse("follow", clock=clock)
        self.saved_doc: Doc | None = None

    def catch_up(self, *, first: bool = False) -> RebuildReport:
        """An incremental run (a full one when it must be, saying why); saves the checkpoint.
        Only the `first` counts the log's documents that are not events (a query over the
        whole log): the later ones save the checkpoint while events arrive."""
        plan = plan_rebuild(
            self.store,
            self.projection,
            incremental=True,
            margin=self.margin,
            part=self.part,
            with_total=False,
        )
        if plan.reason:
            self.notice(f"rebuilding in full: {plan.reason}")
        report = rebuild(
            self.store,
            plan,
            count_not_events=first,
            extra=lambda: {"liveness": self._liveness()},
        )
        self.saved_doc = report.checkpoint
        self.since = plan.next_since
        self.saved_at = self.clock()
        self.checkpoints += 1
        return report

    def run(self, *, idle_timeout: float | None = None) -> FollowReport:
        """Catch up, then follow until --idle-timeout or Ctrl-C."""
        from evstream.watching import Hooks, Watcher, WatchOptions

        first = self.catch_up(first=True)
        self.notice(
            f"following {self.projection.name}: caught up ({first.mode}, {first.applied:,} "
            f"event{'s' * (first.applied != 1)} applied); applying new events as they arrive"
        )
        options = WatchOptions(
            types=list(self.projection.read_types or []),
            start=self.since,
            start_given=True,
            idle_timeout=idle_timeout,
        )
        hooks = Hooks(
            deliver=self._deliver,
            notice=self.notice,
            warning=self.warning,
            late="it is applied now (once: an event applied before changes nothing)",
            tick=self._beat,
        )
        # Documents that are not events from before this start were the catch-up's to report.
        self.started = now_utc() - TS_DISORDER
        stopped = False
        try:
            Watcher(self.store, options, hooks).run()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: save the checkpoint, then say so
            stopped = True
        except Exception as exc:
            self._last_beat("failed", getattr(exc, "message", None) or str(exc))
            raise
        if self.live.events:
            self.catch_up()  # the checkpoint, for status and the next --incremental
        self._last_beat("stopped")
        report = FollowReport(first, self.live, self.checkpoints)
        if stopped:
            raise CTRL_C.stopped(follow_stopped_line(self.projection.name, report))
        return report

    def _liveness(self, state: str = "running", error: str | None = None) -> Doc:
        pulse = self.pulse
        pulse.handled = self.live.applied
        pulse.position = self.live.last_event_ts
        return pulse.record(state, error)

    def _beat(self) -> None:
        """Every heartbeat: the last checkpoint again, with fresh liveness (the same position:
        what an incremental run saved, never more)."""
        if self.saved_doc is not None and self.pulse.due():
            self.saved_doc = {**self.saved_doc, "liveness": self._liveness()}
            db.save_checkpoint(self.store, self.saved_doc)

    def _last_beat(self, state: str, error: str | None = None) -> None:
        """On the way out: the liveness says how the follower ended (best effort, bounded)."""
        if self.saved_doc is None:
            return
        with contextlib.suppress(Exception), self.store.quickly():
            self.saved_doc = {**self.saved_doc, "liveness": self._liveness(state, error)}
            db.save_checkpoint(self.store, self.saved_doc)

    def _deliver(self, change: Any) -> None:
        """One change of the log: apply it if it is an event of this projection and part."""
        event = change.doc  # a canonical event (a `Canonical` on a mapped log)
        if change.op != "insert" or event is None:
            return
        self.live.events += 1
        problem = event_problem(event, self.store.fieldmap.versioned)
        if problem is not None:
            ts = event.get("ts")
            if isinstance(ts, datetime) and aware(ts) < self.started:
                return  # read again by the handover from before this start: not new
            self.live.skipped.add(event, problem)
            line = self.live.skipped.line("documents")
            if self.live.skipped.total == 1 and line:
                self.warning(line)
            return
        types = self.projection.read_types
        if types is not None and event["type"] not in types:
            return
        if self.projection.key is not None:
            from evstream import keyed

            if not keyed.deliver(
                self.store, self.projection, event, self.part, self.live, self.keyed_writer
            ):
                return
        else:
            if not in_part(event["stream"], self.part):
                return
            prepared = self.projection.prepare(event)
            if prepared is None:
                return  # upcast into a type the projection does not read
            update_streams(
                self.store, self.projection, {event["stream"]: [prepared]}, self.writer, self.live
            )
            self.writer.flush()
        ts = event["ts"]
        if self.live.last_event_ts is None or ts > self.live.last_event_ts:
            self.live.last_event_ts = ts
        if self.clock() - self.saved_at >= self.every:
            self.catch_up()


# --- the use cases: `rebuild NAME` and `rebuild NAME --follow` (the CLI and the API) -----------


def run_rebuild(
    store: Store,
    projection: Projection,
    *,
    incremental: bool = False,
    dry_run: bool = False,
    margin: float = DEFAULT_MARGIN,
    part: Part | None = None,
    batch_size: int | None = None,
    with_total: bool = False,
    progress: Progress = no_progress,
    status: Status = no_status,
    notice: Callable[[str], None] = ignore,
    warning: Callable[[str], None] = ignore,
) -> RebuildReport:
    """Plan a rebuild, run it, and report: why it runs in full (a notice), the documents that
    are not events (a warning). `with_total` counts the events first, for a progress bar."""
    if not dry_run:
        ensure_indexes(store)  # the (stream, version) order and the ts window use them
        if projection.key_rule is not None:
            db_keyed.ensure_key_index(store, projection.key_rule.path)
    with status("planning the rebuild: the log's size and the last run"):
        plan = plan_rebuild(
            store,
            projection,
            incremental=incremental,
            margin=margin,
            part=part,
            with_total=with_total,
        )
    if plan.reason:
        notice(f"rebuilding in full: {plan.reason}")
    label = "applying new events" if plan.mode == "incremental" else f"rebuilding {projection.name}"
    with progress(label, total=plan.total or None, counts="events") as advance:
        report = rebuild(store, plan, dry_run=dry_run, batch_size=batch_size, progress=advance)
    skipped = report.skipped.line("documents")
    if skipped:
        warning(skipped)
    return report


def follow_projection(
    store: Store,
    projection: Projection,
    *,
    part: Part | None = None,
    margin: float = DEFAULT_MARGIN,
    idle_timeout: float | None = None,
    notice: Callable[[str], None] = ignore,
    warning: Callable[[str], None] = ignore,
) -> FollowReport:
    """Catch up, then keep the projection current from the change stream until `idle_timeout`
    passes without an event (or Ctrl-C); what was applied."""
    ensure_indexes(store)
    if projection.key_rule is not None:
        db_keyed.ensure_key_index(store, projection.key_rule.path)
    follower = Follower(store, projection, part=part, margin=margin, notice=notice, warning=warning)
    return follower.run(idle_timeout=idle_timeout)
