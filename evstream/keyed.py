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

Documents are `{_id: key, **state, version, updated_at, events}`, `version` = `events` (the key's
events folded), written whole and only over a document of a lower or equal version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from evstream.errors import EvstreamError
from evstream.events import UNSORTED, Skipped, event_problem, part_of_stream
from evstream.projections import KeyRule, Projection
from evstream.storage import Store
from evstream.storage import keyed as db
from evstream.storage import projections as logdb

if TYPE_CHECKING:
    from evstream.projection import Plan, RebuildReport

Doc = dict[str, Any]
Part = tuple[int, int]
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
    """Fold every key (of this part) from the log read in key order; delete the documents of
    keys the log no longer has. The keys written are returned."""
    proj, part = plan.projection, plan.part
    rule = rule_of(proj)
    versioned = store.fieldmap.versioned
    before = plan.next_since
    newest = report.last_event_ts
    seen: set[Any] = set()
    current: Any = None
    group: list[Doc] = []
    read = 0
    state: Doc | None = None

    def finish() -> None:
        nonlocal state
        if group:
            state = fold_key(proj, group, state)
            group.clear()
        if state is not None:
            writer.put(current, state)
            report.streams += 1
        state = None

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
            seen.add(key)
        report.applied += 1
        if newest is None or doc["ts"] > newest:
            newest = doc["ts"]
        group.append(doc)
        if len(group) == 1000:
            state = fold_key(proj, group, state)
            group.clear()
    if current is not None:
        finish()
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
) -> None:
    """Write each key's document folded from its whole history, read in one query."""
    if not keys:
        return
    rule = rule_of(proj)
    versioned = store.fieldmap.versioned
    wanted = {(type(k).__name__, k) for k in keys}
    span = span_of(rule, keys)
    current: Any = None
    state: Doc | None = None
    batch: list[Doc] = []

    def done() -> None:
        folded = fold_key(proj, batch, state)
        if folded is not None:
            report.streams += 1
            writer.put(current, folded)

    for event in db.read_keys(store, proj.read_types, rule.path, keys, span):
        if event_problem(event, versioned) is not None:
            continue  # counted by the run's own reads
        key = rule.value(event)
        if key is None or (type(key).__name__, key) not in wanted:
            continue
        if current is None or key != current or type(key) is not type(current):
            if current is not None:
                done()
            current, state, batch = key, None, []
        batch.append(event)
        if len(batch) == 1000:
            state, batch = fold_key(proj, batch, state), []
    if current is not None:
        done()
    writer.flush()


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
