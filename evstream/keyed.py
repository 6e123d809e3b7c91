"""The engine of keyed projections: one document per key value, folded across streams in log
order (docs/projections.md, "Keyed projections").

- A full run reads the declared types sorted by the key's path, then in log order (`ts`,
  stream, version; `ts`, `_id` without versions), so each key's events come together: it folds
  one key at a time, writes it whole, and deletes the documents of keys no longer in the log.
- An incremental run reads the window (as a stream projection's, `evstream.projection`), notes
  the keys it touched and refolds each of them from that key's whole history (a query on the
  key's path, served by an index `{key: 1, ts: 1}`). An event that landed with a `ts` older than
  others of its key is therefore folded where a full run folds it; one behind the checkpoint is
  caught by the checkpoint's count, which makes the run a full one.
- A follower refolds the key of each event it is handed.
- After an archive, each of these folds of a key starts from the key's snapshot at the
  archive's edge (`evstream_archived_keys`, built by `evstream.keyed_archive`) and passes over
  the key's events at or before the snapshot's `through` (its last archived event, in log
  order): they are in the snapshot, whether or not a restore put them back in the log.

Documents are `{_id: key, **state, version, updated_at, events}`, `version` = `events` (the key's
events folded), written whole and only over a document of a lower or equal version.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from evstream.errors import EvstreamError
from evstream.events import UNSORTED, Skipped, event_problem, part_of_stream
from evstream.projections import KeyRule, Projection
from evstream.storage import Store, lifecycle
from evstream.storage import keyed as db
from evstream.storage import projections as logdb
from evstream.storage.codec import aware

if TYPE_CHECKING:
    from evstream.projection import Plan, RebuildReport

Doc = dict[str, Any]
Part = tuple[int, int]
Position = tuple[datetime, str, int]
WRITE_BATCH = 500
CHUNK_KEYS = 2_000


class DocumentTooLarge(EvstreamError):
    """A key's document would pass MongoDB's 16 MB limit: the run stops before writing it."""


def in_part(key: Any, part: Part | None) -> bool:
    """Whether a key belongs to this part: the one partition rule (`part_of_stream`) on the key
    value (docs/delivery.md, "Partitions")."""
    return part is None or part_of_stream(key, part[1]) == part[0]


def key_in_part(rule: KeyRule, event: Doc, part: Part | None, report: RebuildReport) -> Any:
    """The event's key when it has one (else counted in `without_key`) of this part; else
    None."""
    key = rule.value(event)
    if key is None:
        report.without_key += 1
        return None
    return key if in_part(key, part) else None


def rule_of(proj: Projection) -> KeyRule:
    assert proj.key_rule is not None
    return proj.key_rule


class KeyedWriter:
    """Buffers whole key documents, compares them with the stored ones (unchanged ones are not
    written; a dry run only counts), writes in bulk."""

    def __init__(
        self, store: Store, proj: Projection, report: RebuildReport, *, dry_run: bool = False
    ) -> None:
        self.store, self.proj, self.report, self.dry_run = store, proj, report, dry_run
        self.pending: list[Doc] = []
        self._archived = False

    def archived(self) -> bool:
        """Whether an archive ever ran here (asked until one has: archives do not go away)."""
        if not self._archived:
            self._archived = lifecycle.archive_runs_exist(self.store)
        return self._archived

    def put(self, key: Any, state: Doc) -> None:
        doc: Doc = {"_id": key, **state}
        size = db.document_size(doc)
        if size > db.MAX_DOCUMENT:
            raise DocumentTooLarge(
                f"projection {self.proj.name!r}: the document of key {key!r} would be "
                f"{size:,} bytes, over MongoDB's 16 MB limit; nothing of it was written",
                hint="key on something finer (e.g. ts:hour rather than ts:day) or keep less "
                "per key",
            )
        self.pending.append(doc)
        if len(self.pending) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        docs, self.pending = self.pending, []
        if not docs:
            return
        stored = db.find_keyed(self.store, self.proj.collection, (d["_id"] for d in docs))
        changed = []
        for doc in docs:
            old = stored.get(doc["_id"])
            if old == doc:
                self.report.unchanged += 1
                continue
            if old is None:
                self.report.created += 1
            else:
                self.report.updated += 1
            changed.append(doc)
        if not self.dry_run:
            self.report.superseded += db.write_keyed(self.store, self.proj.collection, changed)


def valid_events(
    proj: Projection, docs: Iterable[Doc], report: RebuildReport, versioned: bool
) -> Iterator[Doc]:
    """The events among `docs` (documents that are not events skipped and counted)."""
    for doc in docs:
        problem = event_problem(doc, versioned)
        if problem is not None:
            report.skipped.add(doc, problem)
            continue
        yield doc


def fold_key(proj: Projection, events: Iterable[Doc], state: Doc | None = None) -> Doc | None:
    """A key's state from its events (upcast; those no longer of its types dropped) folded onto
    `state` (None: the initial state), None when no event is left."""
    prepare = proj.prepare
    batch: list[Doc] = []
    for event in events:
        prepared = prepare(event)
        if prepared is None:
            continue
        batch.append(prepared)  # type: ignore[arg-type]
        if len(batch) == 1000:
            state = proj.fold_keyed(batch, state)
            batch = []
    if batch:
        state = proj.fold_keyed(batch, state)
    return state


# --- snapshots at an archive's edge --------------------------------------------------------------


def position(event: Doc) -> Position:
    """An event's place in log order (archives need versions: docs/lifecycle.md)."""
    return aware(event["ts"]), event["stream"], int(event.get("version") or 0)


def edge_of(snap: Doc | None) -> Position | None:
    """The log position of a key snapshot's last archived event."""
    if snap is None:
        return None
    through = snap["through"]
    return aware(through["ts"]), through["stream"], int(through["version"])


def start_of(snap: Doc | None) -> tuple[Doc | None, Position | None]:
    """A key's fold start: a copy of its snapshot's state (None: the initial one), and the edge
    at or before which its events are in that state."""
    if snap is None:
        return None, None
    return copy.deepcopy(snap["state"]), edge_of(snap)


def key_rank(key: Any) -> tuple[int, Any]:
    """The order of key values as the server sorts them (numbers, strings, dates)."""
    if isinstance(key, datetime):
        return 2, aware(key)
    return (0, key) if type(key) is int else (1, key)


class KeyStarts:
    """A projection's key snapshots in key order, taken alongside the log's keys in a full run:
    a key's start, and the keys the log no longer holds (their document is the snapshot)."""

    def __init__(self, docs: Iterable[Doc]) -> None:
        self._docs = iter(docs)
        self._last: tuple[int, Any] | None = None
        self._head: Doc | None = self._next()

    def _next(self) -> Doc | None:
        doc = next(self._docs, None)
        if doc is not None:
            rank = key_rank(doc["key"])
            if self._last is not None and not rank > self._last:
                raise EvstreamError(
                    f"the server returned key snapshot {doc['key']!r} out of order (is a "
                    "collation set on evstream_archived_keys?)"
                )
            self._last = rank
        return doc

    def before(self, key: Any) -> Iterator[Doc]:
        """Snapshots of keys ordered before `key` (all that are left for None)."""
        while self._head is not None and (
            key is None or key_rank(self._head["key"]) < key_rank(key)
        ):
            doc, self._head = self._head, self._next()
            yield doc

    def take(self, key: Any) -> Doc | None:
        """The snapshot of `key`, if the next one is it."""
        if self._head is not None and key_rank(self._head["key"]) == key_rank(key):
            doc, self._head = self._head, self._next()
            return doc
        return None


def key_starts(store: Store, proj: Projection, writer: KeyedWriter) -> KeyStarts | None:
    """The projection's key snapshots for a full run (None when no archive kept any)."""
    if not writer.archived() or not db.any_key_snapshots(store, proj.name, proj.version):
        return None
    return KeyStarts(db.sorted_key_snapshots(store, proj.name, proj.version))


def span_of(rule: KeyRule, keys: list[Any]) -> tuple[datetime, datetime] | None:
    """For bucket keys, the dates from the first bucket's start to the last one's end."""
    if rule.bucket is None or not keys:
        return None
    bounds = [b for b in map(rule.bounds, keys) if b is not None]
    return min(b[0] for b in bounds), max(b[1] for b in bounds)


def keys_with_events(store: Store, proj: Projection, keys: list[Any]) -> set[Any]:
    """Which of these keys the log holds events for (of the declared types, upcast)."""
    rule = rule_of(proj)
    versioned = store.fieldmap.versioned
    wanted = {(type(k).__name__, k) for k in keys}
    found: set[Any] = set()
    for event in db.read_keys(store, proj.read_types, rule.path, keys, span_of(rule, keys)):
        if event_problem(event, versioned) is not None:
            continue
        key = rule.value(event)
        if key is not None and (type(key).__name__, key) in wanted and proj.prepare(event):
            found.add((type(key).__name__, key))
    return found


# --- full ---------------------------------------------------------------------------------------


def full(
    store: Store,
    plan: Plan,
    report: RebuildReport,
    writer: KeyedWriter,
    progress: Callable[[int], None],
) -> set[Any]:
    """Fold every key (of this part) from the log read in key order, each from its snapshot
    after an archive; delete the documents of keys the log (and the snapshots) no longer have.
    The keys written are returned."""
    proj, part = plan.projection, plan.part
    rule = rule_of(proj)
    versioned = store.fieldmap.versioned
    before = plan.next_since
    newest = report.last_event_ts
    starts = key_starts(store, proj, writer)
    seen: set[Any] = set()
    current: Any = None
    group: list[Doc] = []
    read = 0
    state: Doc | None = None
    edge: Position | None = None

    def finish() -> None:
        nonlocal state
        if group:
            state = fold_key(proj, group, state)
            group.clear()
        if state is not None:
            writer.put(current, state)
            report.streams += 1
        state = None

    def only_snapshots(key: Any) -> None:
        """Keys ordered before `key` (all left for None) that only a snapshot holds."""
        assert starts is not None
        for snap in starts.before(key):
            if in_part(snap["key"], part):
                writer.put(snap["key"], copy.deepcopy(snap["state"]))
                report.streams += 1
                seen.add(snap["key"])

    for doc in logdb_read(store, proj, rule):
        read += 1
        if read == 1000:
            report.events += read
            progress(read)
            read = 0
        ts = doc.get("ts")
        if before is not None and isinstance(ts, datetime) and ts < before:
            report.counted += 1
        problem = event_problem(doc, versioned)
        if problem is not None:
            report.skipped.add(doc, problem)
            continue
        key = key_in_part(rule, doc, part, report)
        if key is None:
            continue
        if current is None or key != current or type(key) is not type(current):
            if current is not None:
                if key in seen:
                    raise EvstreamError(
                        f"the server returned key {key!r} again after {current!r}: not in the "
                        "order a keyed rebuild needs (is a collation set on the log?)"
                    )
                finish()
            current = key
            if starts is not None:
                only_snapshots(key)
                state, edge = start_of(starts.take(key))
            seen.add(key)
        if edge is not None and position(doc) <= edge:
            continue  # in the key's snapshot (archived, or restored from an archive)
        report.applied += 1
        if newest is None or doc["ts"] > newest:
            newest = doc["ts"]
        group.append(doc)
        if len(group) == 1000:
            state = fold_key(proj, group, state)
            group.clear()
    if current is not None:
        finish()
    if starts is not None:
        only_snapshots(None)
    report.events += read
    progress(read)
    report.last_event_ts = newest
    writer.flush()
    gone = [k for k in db.stored_keys(store, proj.collection) if k not in seen and in_part(k, part)]
    if gone:
        alive = keys_with_events(store, proj, gone)  # a key that got events since the read
        dead = [k for k in gone if (type(k).__name__, k) not in alive]
        report.removed += len(dead)
        if not writer.dry_run:
            logdb.delete_documents(store, proj.collection, dead)
    return seen


def logdb_read(store: Store, proj: Projection, rule: KeyRule) -> Iterator[Doc]:
    return db.read_by_key(store, proj.read_types, rule.path)


# --- incremental and follow ---------------------------------------------------------------------


def incremental(
    store: Store,
    plan: Plan,
    report: RebuildReport,
    writer: KeyedWriter,
    progress: Callable[[int], None],
    count_not_events: bool = True,
) -> None:
    """Refold every key the window touched (of this part) from its whole history."""
    assert plan.since is not None
    proj, part = plan.projection, plan.part
    rule = rule_of(proj)
    versioned = store.fieldmap.versioned
    touched: dict[Any, None] = {}
    newest = report.last_event_ts
    for doc in logdb.read_window(store, proj.read_types, plan.since):
        report.events += 1
        ts = doc.get("ts")
        if isinstance(ts, datetime) and ts < plan.next_since:
            report.counted += 1
        if event_problem(doc, versioned) is not None:
            continue
        key = key_in_part(rule, doc, part, report)
        if key is None:
            continue
        report.applied += 1
        if newest is None or doc["ts"] > newest:
            newest = doc["ts"]
        touched[(type(key).__name__, key)] = None
        if len(touched) >= CHUNK_KEYS:
            refold_keys(store, proj, [k for _, k in touched], report, writer)
            touched.clear()
    refold_keys(store, proj, [k for _, k in touched], report, writer)
    report.last_event_ts = newest
    progress(report.events)
    report.skipped = Skipped()
    if count_not_events:
        for doc in logdb.read_not_events(store, proj.read_types):
            report.skipped.add(doc, event_problem(doc) or UNSORTED)


def refold_keys(
    store: Store, proj: Projection, keys: list[Any], report: RebuildReport, writer: KeyedWriter
) -> set[tuple[str, Any]]:
    """Write each key's document folded from its whole history (read in one query), from its
    snapshot after an archive. The keys written, as `(type name, key)`."""
    if not keys:
        return set()
    rule = rule_of(proj)
    versioned = store.fieldmap.versioned
    wanted = {(type(k).__name__, k) for k in keys}
    span = span_of(rule, keys)
    snaps = db.key_snapshots_for(store, proj.name, proj.version, keys) if writer.archived() else {}
    written: set[tuple[str, Any]] = set()
    current: Any = None
    state: Doc | None = None
    edge: Position | None = None
    batch: list[Doc] = []

    def done() -> None:
        folded = fold_key(proj, batch, state)
        if folded is not None:
            report.streams += 1
            writer.put(current, folded)
            written.add((type(current).__name__, current))

    for event in db.read_keys(store, proj.read_types, rule.path, keys, span):
        if event_problem(event, versioned) is not None:
            continue  # counted by the run's own reads
        key = rule.value(event)
        if key is None or (type(key).__name__, key) not in wanted:
            continue
        if current is None or key != current or type(key) is not type(current):
            if current is not None:
                done()
            current, batch = key, []
            state, edge = start_of(snaps.pop(db.key_tag(key), None))
        if edge is not None and position(event) <= edge:
            continue  # in the key's snapshot
        batch.append(event)
        if len(batch) == 1000:
            state, batch = fold_key(proj, batch, state), []
    if current is not None:
        done()
    for snap in snaps.values():  # keys whose events are all archived: their snapshot
        current, batch = snap["key"], []
        state = copy.deepcopy(snap["state"])
        done()
    writer.flush()
    return written


def deliver(
    store: Store,
    proj: Projection,
    event: Doc,
    part: Part | None,
    report: RebuildReport,
    writer: KeyedWriter,
) -> bool:
    """A follower's event: refold its key (of this part). Whether it was one of this
    projection's."""
    key = key_in_part(rule_of(proj), event, part, report)
    if key is None:
        return False
    refold_keys(store, proj, [key], report, writer)
    report.applied += 1
    return True
