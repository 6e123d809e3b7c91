"""The event log's writes: appending events (one, or batches) safely under concurrent writers,
and the indexes that make it safe (docs/storage.md, "The log")."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bson import encode as bson_encode
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    WriteError,
)

from evstream.errors import (
    ConcurrencyConflict,
    ConnectionLost,
    EventRefused,
    FeatureUnsupported,
    IndexProblem,
    StorageFull,
)
from evstream.events import MAX_DOCUMENT_BYTES, EventInput, InvalidEvent, new_event_id
from evstream.fieldmap import DEFAULT, FieldMap
from evstream.storage.errors import (
    DUPLICATE_KEY,
    INDEX_CONFLICT_CODES,
    driver_message,
    is_out_of_space,
    is_retryable,
    out_of_space,
    server_message,
)
from evstream.storage.mongo import EVENTS, OWN_PREFIX, SESSIONS, Doc, MongoStore

Store = MongoStore


# --- the log's indexes -------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexSpec:
    """An index evstream needs on the log: its name, keys and whether it is unique."""

    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    why: str = ""

    def mongosh(self, collection: str = EVENTS) -> str:
        """The mongosh line that creates it."""
        keys = ", ".join(f"{_key_name(k)}: {d}" for k, d in self.keys)
        options = f', {{name: "{self.name}"{", unique: true" if self.unique else ""}}}'
        return f"{db_collection(collection)}.createIndex({{{keys}}}{options})"

    def shape(self) -> str:
        """Its keys as mongosh writes them: {stream: 1, version: 1}."""
        return "{" + ", ".join(f"{_key_name(k)}: {d}" for k, d in self.keys) + "}"


def _key_name(path: str) -> str:
    return path if path.isidentifier() else f'"{path}"'


def db_collection(name: str) -> str:
    """How mongosh names a collection: db.events, or db.getCollection("domain-events")."""
    if name.replace("_", "a").isalnum() and not name[:1].isdigit():
        return f"db.{name}"
    return f'db.getCollection("{name}")'


STREAM_VERSION_INDEX = "stream_1_version_1"
LOG_INDEXES = (
    IndexSpec(
        STREAM_VERSION_INDEX,
        (("stream", 1), ("version", 1)),
        unique=True,
        why="makes concurrent appends safe (one event per stream and version)",
    ),
    IndexSpec("ts_1", (("ts", 1),), why="serves reads in time order (watch, status, rebuilds)"),
)


def log_indexes(fm: FieldMap = DEFAULT) -> tuple[IndexSpec, ...]:
    """The indexes the log needs, on the map's paths: the unique {stream, version} index (on a
    log without versions, {stream, ts}, not unique: a stream's order) and the ts index."""
    if fm is DEFAULT or not fm.shaped:
        return LOG_INDEXES
    first = (
        IndexSpec(
            f"{fm.stream}_1_{fm.version}_1",
            ((fm.stream, 1), (fm.version, 1)),
            unique=True,
            why=LOG_INDEXES[0].why,
        )
        if fm.version is not None
        else IndexSpec(
            f"{fm.stream}_1_{fm.ts}_1",
            ((fm.stream, 1), (fm.ts, 1)),
            why="serves a stream's events in (ts, id) order (rebuilds)",
        )
    )
    return (first, IndexSpec(f"{fm.ts}_1", ((fm.ts, 1),), why=LOG_INDEXES[1].why))


def index_keys(index: Doc) -> tuple[tuple[str, int], ...]:
    """An index's key pattern as a comparable tuple."""
    return tuple(
        (str(k), int(v) if isinstance(v, (int, float)) else v) for k, v in index["key"].items()
    )


def index_findings(
    existing: Iterable[Doc], specs: tuple[IndexSpec, ...] = LOG_INDEXES
) -> list[tuple[IndexSpec, str, Doc | None]]:
    """What is wrong with the log's indexes: (spec, 'missing' | 'not-unique', the index found)."""
    rows = list(existing)
    found = []
    for spec in specs:
        same = [ix for ix in rows if index_keys(ix) == spec.keys]
        if spec.unique and same and not any(ix.get("unique") for ix in same):
            found.append((spec, "not-unique", same[0]))
        elif not same:
            found.append((spec, "missing", None))
    return found


def not_unique_problem(
    index: Doc, spec: IndexSpec = LOG_INDEXES[0], collection: str = EVENTS
) -> IndexProblem:
    """The error for a non-unique index on {stream, version}, which makes appends unsafe."""
    name = index.get("name")
    return IndexProblem(
        f"the {collection} collection has a non-unique index {name!r} on {spec.shape()}, "
        "so concurrent publishers could store one version twice; evstream will not append",
        hint=f'in mongosh: {db_collection(collection)}.dropIndex("{name}"), then run evstream '
        "again to create the unique one ('evstream check' first finds any duplicate versions "
        "that would stop it)",
    )


def ensure_indexes(store: MongoStore) -> None:
    """Make sure the log's indexes exist: one listIndexes, and only what is missing created.

    A non-unique index on {stream, version} (an application's, say) is refused with the fix
    (IndexProblem, exit 4): evstream's unique index could not be created beside it, and without
    it concurrent appends are not safe. Checked once per store.
    """
    if store.indexes_checked:
        return
    specs = log_indexes(store.fieldmap)
    collection = store.log_name
    try:
        existing = list(store.events.list_indexes())
    except OperationFailure as exc:
        if exc.code != 26:  # NamespaceNotFound: no collection yet, no indexes
            raise
        existing = []
    for spec, problem, index in index_findings(existing, specs):
        if problem == "not-unique":
            assert index is not None
            raise not_unique_problem(index, spec, collection)
        try:
            store.events.create_index(list(spec.keys), name=spec.name, unique=spec.unique)
        except OperationFailure as exc:
            if exc.code in INDEX_CONFLICT_CODES:
                reason = server_message(exc)[:200]
                raise IndexProblem(
                    f"cannot create the index {spec.name} ({spec.why}): {reason}",
                    hint=f"drop the conflicting index, then run evstream again; in mongosh: "
                    f"{spec.mongosh(collection)}",
                ) from None
            if exc.code == DUPLICATE_KEY and spec.unique:
                raise IndexProblem(
                    f"cannot create the unique {spec.shape()} index: the log already holds a "
                    "stream with a version twice",
                    hint="run 'evstream check' to find them",
                ) from None
            raise
    if any(spec.unique for spec, _, _ in index_findings(store.events.list_indexes(), specs)):
        raise IndexProblem(
            f"the unique {specs[0].shape()} index could not be created (the server ignored it)",
            hint="run 'evstream check' for the log's indexes",
        )
    store.indexes_checked = True


def now_utc() -> datetime:
    """The current time at BSON's millisecond precision, so printed and stored agree."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def build_document(
    event: EventInput, version: int | None, ts: datetime, fm: FieldMap = DEFAULT
) -> dict[str, Any]:
    """The stored form of an event (docs/data-model.md, the `events` table), in the map's
    shape (docs/adopting.md); `version` None on a log without versions."""
    if fm.shaped:
        return fm.build(
            event.id or new_event_id(),
            event.stream,
            version,
            event.type,
            event.data,
            event.meta,
            event.ts or ts,
            event.extra,
        )
    doc: dict[str, Any] = {
        "_id": event.id or new_event_id(),
        "stream": event.stream,
        "version": version,
        "type": event.type,
        "data": event.data,
    }
    if event.meta is not None:
        doc["meta"] = event.meta
    doc["ts"] = event.ts or ts
    if event.extra:
        doc.update(event.extra)  # a copy's own fields, as the stored event had them
    if version is None:
        del doc["version"]
    return doc


def no_versions(event: EventInput, fm: FieldMap) -> FeatureUnsupported:
    """The refusal of an expected version on a log without versions (exit 4)."""
    where = f"line {event.line}: " if event.line is not None else ""
    return FeatureUnsupported(
        f"{where}--expected-version needs per-stream versions, and this log has none "
        f"({fm.where()} says version = false)" + ("" if where else "; nothing was written"),
        hint="publish without an expected version: events are appended in (ts, id) order",
    )


def check_size(doc: Doc, line: int | None = None) -> None:
    """Refuse a document over MongoDB's 16 MB limit before anything is sent."""
    size = len(bson_encode(doc))
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidEvent(
            f"event is {size / 1024 / 1024:.1f} MB; MongoDB stores documents up to 16 MB",
            line=line,
        )


def refused(event: EventInput, error: dict[str, Any]) -> EventRefused | StorageFull:
    """The error for an event the server would not store for its content (not a duplicate key):
    a collection validator (code 121), a value the server cannot store …"""
    where = f"line {event.line}: " if event.line is not None else ""
    reason = " ".join(str(error.get("errmsg") or "no reason given").split())[:200]
    if is_out_of_space(error.get("code"), reason):
        # Not the event's fault: the same input is stored once there is room.
        full = out_of_space(reason)
        at = f" at line {event.line}" if event.line is not None else ""
        return StorageFull(f"{full.message}{at}", hint=full.hint)
    return EventRefused(
        f"{where}the server refused the event for stream {event.stream!r}: {reason} "
        f"(code {error.get('code')})"
    )


def is_id_conflict(error: dict[str, Any]) -> bool:
    """Whether a duplicate-key error is on `_id` (a re-published event), not on the version."""
    pattern = error.get("keyPattern")
    if isinstance(pattern, dict):
        return list(pattern) == ["_id"]
    message = str(error.get("errmsg", ""))
    # MongoDB: "... index: _id_ dup key: ..."; nx-27017: "UNIQUE constraint failed: events._id".
    return " _id_ " in message or message.rstrip().endswith("._id")


def stream_head(store: Store, stream: str) -> int:
    """The stream's current version (0 for a stream with no events).

    When the stream's highest `version` in MongoDB's sort order is not a whole number 1 or more
    (a string or an object, which sort above every number; a double; a boolean …, as another
    application may write it), the append is refused: exit 2, naming the document.
    """
    fm = store.fieldmap
    if fm.version is None:
        return 0
    doc = store.events.find_one(
        {fm.stream: stream},
        sort=[(fm.version, -1)],
        projection={fm.version: 1, "_id": 1},
    )
    if doc is None:
        return 0
    version = store.canonical(doc).get("version") if fm.shaped else doc.get("version")
    return valid_head(stream, version, doc.get("_id"))


def stream_heads(store: Store, streams: Iterable[str]) -> dict[str, int]:
    """The current version of each stream, in one round trip; absent streams are at 0.

    A head that is not a valid version is refused as in `stream_head`."""
    wanted = list(streams)
    if not wanted:
        return {}
    heads = dict.fromkeys(wanted, 0)
    for row in store.events.aggregate(store.heads_pipeline(wanted)):
        version = row["version"]
        if version is None:  # only documents without a version: none to continue
            continue
        if _is_version(version):
            heads[row["_id"]] = int(version)
        else:  # finds the document that holds it, and refuses
            heads[row["_id"]] = stream_head(store, row["_id"])
    return heads


def _is_version(value: Any) -> bool:
    return type(value) is int and value >= 1


def valid_head(stream: str, version: Any, doc_id: Any) -> int:
    """A stored head as a version, or EventRefused (exit 2) naming the document that holds it
    (callers add what was written before it).

    Documents with no version, or null, sort below every number and never become the head.
    """
    if version is None:
        return 0
    if _is_version(version):
        return int(version)
    shown = repr(version) if isinstance(version, (str, int, float)) else type(version).__name__
    ident = repr(doc_id) if isinstance(doc_id, str) else f'{type(doc_id).__name__}("{doc_id}")'
    if isinstance(doc_id, int):
        ident = str(doc_id)
    raise EventRefused(
        f"cannot append to stream {stream!r}: its highest version is {shown}, not a whole "
        f"number 1 or more, in the document with _id {ident}, which evstream did not write "
        "(give it a whole-number version or move it out of events; 'evstream check' lists "
        "every such document)"
    )


@dataclass
class AppendResult:
    """The stored event and whether it was already there (same id) before this call."""

    doc: dict[str, Any]
    duplicate: bool


def append_one(store: Store, event: EventInput, *, max_attempts: int = 100) -> AppendResult:
    """Append one event at its stream's end (or at expected_version + 1), safe under concurrency.

    On a mapped log the result's `doc` is a `Canonical` event keeping the stored document: shown
    by its canonical fields, printed as JSON as stored (docs/adopting.md)."""
    result = _append_one(store, event, max_attempts=max_attempts)
    if store.fieldmap.translates:
        result.doc = store.fieldmap.watched(result.doc)
    return result


def _append_one(store: Store, event: EventInput, *, max_attempts: int = 100) -> AppendResult:
    events = store.events
    fm = store.fieldmap
    if event.id is not None:
        existing = events.find_one({"_id": event.id})
        if existing is not None:
            return AppendResult(existing, True)
    if not fm.versioned:
        if event.expected_version is not None:
            raise no_versions(event, fm)
        return _append_unversioned(store, event)
    for attempt in range(max_attempts):
        try:
            head = stream_head(store, event.stream)
        except EventRefused as exc:
            raise EventRefused(f"{exc.message}; nothing was written") from None
        if event.expected_version is not None and head != event.expected_version:
            raise conflict(event, head)
        doc = build_document(event, head + 1, now_utc(), fm)
        check_size(doc)
        writes = RideOut(store)
        try:
            writes.run(functools.partial(events.insert_one, doc))
            return AppendResult(doc, False)
        except DuplicateKeyError as exc:
            if writes.retried and events.find_one({"_id": doc["_id"]}, {"_id": 1}):
                return AppendResult(doc, False)  # an earlier try stored it; its reply was lost
            if is_id_conflict(exc.details or {}):
                stored = events.find_one({"_id": doc["_id"]})
                return AppendResult(stored or doc, True)
            if event.expected_version is not None:
                raise conflict(event, stream_head(store, event.stream)) from None
            backoff(attempt)
        except WriteError as exc:
            error = refused(event, exc.details or {"errmsg": str(exc), "code": exc.code})
            raise EventRefused(f"{error.message}; nothing was written") from None
    raise ConcurrencyConflict(
        f"could not append to stream {event.stream!r}: {max_attempts} attempts lost the race"
    )


def _append_unversioned(store: Store, event: EventInput) -> AppendResult:
    """Append one event to a log without versions: one insert, its place is its (ts, id)."""
    doc = build_document(event, None, now_utc(), store.fieldmap)
    check_size(doc)
    writes = RideOut(store)
    try:
        writes.run(functools.partial(store.events.insert_one, doc))
        return AppendResult(doc, False)
    except DuplicateKeyError as exc:
        if writes.retried or is_id_conflict(exc.details or {}):
            stored = store.events.find_one({"_id": doc["_id"]})
            return AppendResult(stored or doc, not writes.retried)
        raise
    except WriteError as exc:
        error = refused(event, exc.details or {"errmsg": str(exc), "code": exc.code})
        raise EventRefused(f"{error.message}; nothing was written") from None


class RideOut:
    """Runs writes through an election or a server restart: retryable errors (pymongo retries
    once by itself) are tried again until the store's timeout passes, then ConnectionLost.

    `retried` tells a caller whether a write was sent more than once, so that it can tell its
    own earlier write from someone else's (a duplicate _id after a retry is its own).
    """

    def __init__(self, store: MongoStore) -> None:
        self.store = store
        self.retried = False

    def run(self, action: Callable[[], Any], on_retry: Callable[[], None] | None = None) -> None:
        """Run `action`; `on_retry` runs before each new try."""
        deadline: float | None = None
        attempt = 0
        while True:
            try:
                if attempt and on_retry is not None:
                    on_retry()
                action()
                return
            except (ConnectionFailure, OperationFailure) as exc:
                if isinstance(exc, (BulkWriteError, DuplicateKeyError, WriteError)):
                    raise
                if not is_retryable(exc):
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.store.timeout_s
                if now >= deadline:
                    raise ConnectionLost(driver_message(exc)) from None
                time.sleep(min(0.05 * 2**attempt, 1.0, max(deadline - now, 0)))
                attempt += 1
                self.retried = True


def conflict(event: EventInput, actual: int) -> ConcurrencyConflict:
    """The error for a failed expected-version check (or a stored event that cannot keep its
    version: a copy names the version it carries, not an expected version)."""
    where = f"line {event.line}: " if event.line is not None else ""
    if event.version is not None:
        return ConcurrencyConflict(
            f"{where}stream {event.stream!r} is at version {actual}, so the stored event with "
            f"version {event.version} cannot keep its version (copy into a database without "
            "these streams, in stream and version order)"
            + ("; nothing was written" if event.line is None else ""),
        )
    return ConcurrencyConflict(
        f"{where}stream {event.stream!r} is at version {actual}, "
        f"not the expected version {event.expected_version}; nothing was written"
        if event.line is None
        else f"{where}stream {event.stream!r} is at version {actual}, "
        f"not the expected version {event.expected_version}"
    )


def backoff(attempt: int) -> None:
    """A short jittered sleep between retries of a lost race."""
    time.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.1)))


@dataclass
class BatchResult:
    """What one batch did: events stored, and the inputs that were already stored (duplicates)."""

    inserted: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[EventInput] = field(default_factory=list)


class Appender:
    """Appends batches of events with one insert per batch, keeping stream heads between batches.

    Versions follow input order within each stream. A lost race with another writer (a version
    collision) re-reads the heads of the streams involved and retries the rest of the batch.
    """

    MAX_CACHED_HEADS = 200_000

    def __init__(self, store: Store) -> None:
        self.store = store
        self.heads: dict[str, int] = {}
        self.inserted = 0  # running totals, exact even when a batch stops midway
        self.duplicates = 0
        # When the log was empty as the run began, a stream this run has not written can only
        # exist if another writer created it meanwhile, and then the unique index says so: so
        # unknown streams start at 0 without asking, and a collision turns the asking back on.
        self.optimistic: bool | None = None

    def write(self, batch: list[EventInput]) -> BatchResult:
        """Store a batch; raises ConcurrencyConflict at the first failed expected version, and
        ConnectionLost when the server stays away longer than the store's timeout."""
        try:
            return self._write(batch)
        except ConnectionFailure as exc:
            raise ConnectionLost(driver_message(exc)) from None

    def _write(self, batch: list[EventInput]) -> BatchResult:
        result = BatchResult()
        pending = self._drop_known_ids(batch, result)
        for attempt in range(100):
            if not pending:
                return result
            docs, conflict_at = self._assign(pending)
            inserted, error = self._insert(docs)
            result.inserted.extend(docs[:inserted])
            self.inserted += inserted
            if error is None:
                if conflict_at is not None:
                    event = pending[conflict_at]
                    self.heads.pop(event.stream, None)
                    raise conflict(event, stream_head(self.store, event.stream))
                return result
            rest = pending[inserted:]
            if error.get("code") != DUPLICATE_KEY:
                raise refused(rest[0], error)
            if is_id_conflict(error):
                result.duplicates.append(rest[0])
                self.duplicates += 1
                rest = rest[1:]
            elif rest[0].expected_version is not None:
                raise conflict(rest[0], stream_head(self.store, rest[0].stream))
            else:
                self.optimistic = False
                backoff(attempt)
            for event in rest:  # their cached heads ran ahead of what was stored
                self.heads.pop(event.stream, None)
            pending = rest
        raise ConcurrencyConflict("could not append the batch: 100 attempts lost the race")

    def _drop_known_ids(self, batch: list[EventInput], result: BatchResult) -> list[EventInput]:
        """Leave out events whose caller-given id is already stored (or repeated in the batch)."""
        ids = [e.id for e in batch if e.id is not None]
        if not ids:
            return batch
        stored = {d["_id"] for d in self.store.events.find({"_id": {"$in": ids}}, {"_id": 1})}
        keep: list[EventInput] = []
        seen: set[str] = set()
        for event in batch:
            if event.id is not None and (event.id in stored or event.id in seen):
                result.duplicates.append(event)
                self.duplicates += 1
                continue
            if event.id is not None:
                seen.add(event.id)
            keep.append(event)
        return keep

    def _assign(self, pending: list[EventInput]) -> tuple[list[dict[str, Any]], int | None]:
        """Versions for the batch in order; stops before the first failed expected version."""
        unknown = {e.stream for e in pending} - self.heads.keys()
        if unknown and self.store.fieldmap.versioned:
            if self.optimistic is None:
                self.optimistic = self.store.events.find_one({}, {"_id": 1}) is None
            if len(self.heads) > self.MAX_CACHED_HEADS:
                self.heads.clear()
                self.optimistic = False  # forgotten streams may be ours
            if self.optimistic and not any(e.expected_version is not None for e in pending):
                self.heads.update(dict.fromkeys(unknown, 0))
            else:
                self.heads.update(stream_heads(self.store, unknown))
        ts = now_utc()
        docs = []
        fm = self.store.fieldmap
        if not fm.versioned:
            for event in pending:
                if event.expected_version is not None:
                    raise no_versions(event, fm)
                if event.stored is None:
                    event.stored = build_document(event, None, ts, fm)
                if event.ts is None:
                    fm.set_ts(event.stored, ts)  # the time of this write, as below
                docs.append(event.stored)
            return docs, None
        shaped = fm.shaped
        heads = self.heads
        free = free_slots(self.store, pending, heads)
        for i, event in enumerate(pending):
            head = heads[event.stream]
            if event.expected_version is not None and event.expected_version != head:
                if (event.stream, event.version) in free:  # a restored archive fills its place
                    if event.stored is None:
                        event.stored = build_document(event, event.version or 0, ts, fm)
                    if shaped:
                        fm.set_version(event.stored, event.version)
                    else:
                        event.stored["version"] = event.version
                    docs.append(event.stored)
                    continue
                return docs, i
            head += 1
            doc = event.stored
            if doc is None:  # kept: a retry stores the same _id, so never twice
                doc = event.stored = build_document(event, head, ts, fm)
            if shaped:
                fm.set_version(doc, head)
                if event.ts is None:
                    fm.set_ts(doc, ts)
            else:
                doc["version"] = head
                if event.ts is None:
                    # The time of this write, taken after the heads it builds on (and again on
                    # a retry): a stream's versions and its ts then go up together, even with
                    # two publishers on one stream (docs/publish.md, "Batches").
                    doc["ts"] = ts
            heads[event.stream] = head
            docs.append(doc)
        return docs, None

    def _insert(self, docs: list[dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
        """insert_many in order: (number inserted, the write error that stopped it, or None).

        Ordered, so the documents before the failing one are the ones stored, and there is
        at most one write error.
        """
        if not docs:
            return 0, None
        events = self.store.events
        done = 0

        def insert() -> None:
            events.insert_many(docs[done:], ordered=True)

        def skip_stored() -> None:
            # A failed try may have stored a prefix of the batch (ordered): those are ours.
            nonlocal done
            rest = docs[done:]
            ids = {d["_id"] for d in events.find({"_id": {"$in": [d["_id"] for d in rest]}})}
            while done < len(docs) and docs[done]["_id"] in ids:
                done += 1

        try:
            RideOut(self.store).run(insert, on_retry=skip_stored)
            return len(docs), None
        except BulkWriteError as exc:
            errors = (exc.details or {}).get("writeErrors") or []
            if not errors:
                raise
            return done + int(errors[0]["index"]), errors[0]


def free_slots(
    store: Store, pending: list[EventInput], heads: dict[str, int]
) -> set[tuple[str, int]]:
    """The (stream, version) places that copies of stored events below their stream's head
    may fill: free places an archive left (docs/lifecycle.md, "Restoring")."""
    from evstream.storage.lifecycle import free_versions

    wanted = [
        (e.stream, e.version)
        for e in pending
        if e.version is not None and e.ts is not None and heads.get(e.stream, 0) >= e.version
    ]
    return free_versions(store, wanted) if wanted else set()


def events_by_id(store: Store, ids: list[Any]) -> list[Doc]:
    """The stored events with these ids, in (stream, version) order (`Canonical` events on a
    mapped log)."""
    fm = store.fieldmap
    order = [(fm.stream, 1), (fm.version, 1)] if fm.version else [(fm.stream, 1), (fm.ts, 1)]
    if not fm.versioned:
        order.append(("_id", 1))  # a stream's order without versions: (ts, id)
    found = list(store.events.find({"_id": {"$in": ids}}).sort(order))
    # On a mapped log, canonical events that keep the stored documents (as append_one gives).
    return [fm.watched(doc) for doc in found] if fm.translates else found


def sample_documents(store: Store, collection: str, limit: int) -> list[Doc]:
    """Up to `limit` documents of a collection, as they are stored (the newest by `_id` first,
    which for ObjectIds and evstream's ids is the newest written)."""
    cursor = store.collection(collection).find({}).sort("_id", -1).limit(limit)
    with cursor:
        return list(cursor)


MAP_SAMPLE = 20


def verify_map(store: Store) -> None:
    """Refuse a field map that names a path none of the log's newest documents has (exit 2,
    naming the file and the key); an empty log, or evstream's own shape, is not asked."""
    from evstream.errors import InvalidInput
    from evstream.fieldmap import missing_paths

    fm = store.fieldmap
    if not fm.shaped:
        return
    docs = sample_documents(store, fm.collection, MAP_SAMPLE)
    missing = missing_paths(fm, docs)
    if missing:
        name = missing[0]
        path = fm.paths()[name]
        raise InvalidInput(
            f"{fm.where()}: [log] {name} = {path!r}, but none of the {len(docs)} newest "
            f"documents of {store.db.name}.{fm.collection} has {path!r}",
            hint="'evstream init' proposes a map from the documents themselves",
        )


def drop_owned(store: Store) -> list[str]:
    """Drop the collections evstream owns (events, sessions, evstream_*); returns their names."""
    names = [
        name
        for name in store.db.list_collection_names()
        if name in (EVENTS, SESSIONS) or name.startswith(OWN_PREFIX)
    ]
    for name in sorted(names):
        store.db.drop_collection(name)
    return sorted(names)
