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

from evstream.errors import ConcurrencyConflict, ConnectionLost, EventRefused, IndexProblem
from evstream.events import MAX_DOCUMENT_BYTES, EventInput, InvalidEvent, new_event_id
from evstream.storage.errors import (
    DUPLICATE_KEY,
    INDEX_CONFLICT_CODES,
    driver_message,
    is_retryable,
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

    def mongosh(self) -> str:
        """The mongosh line that creates it."""
        keys = ", ".join(f"{k}: {d}" for k, d in self.keys)
        options = f', {{name: "{self.name}"{", unique: true" if self.unique else ""}}}'
        return f"db.events.createIndex({{{keys}}}{options})"


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


def index_keys(index: Doc) -> tuple[tuple[str, int], ...]:
    """An index's key pattern as a comparable tuple."""
    return tuple(
        (str(k), int(v) if isinstance(v, (int, float)) else v) for k, v in index["key"].items()
    )


def index_findings(existing: Iterable[Doc]) -> list[tuple[IndexSpec, str, Doc | None]]:
    """What is wrong with the log's indexes: (spec, 'missing' | 'not-unique', the index found)."""
    rows = list(existing)
    found = []
    for spec in LOG_INDEXES:
        same = [ix for ix in rows if index_keys(ix) == spec.keys]
        if spec.unique and same and not any(ix.get("unique") for ix in same):
            found.append((spec, "not-unique", same[0]))
        elif not same:
            found.append((spec, "missing", None))
    return found


def not_unique_problem(index: Doc) -> IndexProblem:
    """The error for a non-unique index on {stream, version}, which makes appends unsafe."""
    name = index.get("name")
    return IndexProblem(
        f"the events collection has a non-unique index {name!r} on {{stream: 1, version: 1}}, "
        "so concurrent publishers could store one version twice; evstream will not append",
        hint=f'in mongosh: db.events.dropIndex("{name}"), then run evstream again to create the '
        "unique one ('evstream check' first finds any duplicate versions that would stop it)",
    )


def ensure_indexes(store: MongoStore) -> None:
    """Make sure the log's indexes exist: one listIndexes, and only what is missing created.

    A non-unique index on {stream, version} (an application's, say) is refused with the fix
    (IndexProblem, exit 4): evstream's unique index could not be created beside it, and without
    it concurrent appends are not safe. Checked once per store.
    """
    if store.indexes_checked:
        return
    try:
        existing = list(store.events.list_indexes())
    except OperationFailure as exc:
        if exc.code != 26:  # NamespaceNotFound: no collection yet, no indexes
            raise
        existing = []
    for spec, problem, index in index_findings(existing):
        if problem == "not-unique":
            assert index is not None
            raise not_unique_problem(index)
        try:
            store.events.create_index(list(spec.keys), name=spec.name, unique=spec.unique)
        except OperationFailure as exc:
            if exc.code in INDEX_CONFLICT_CODES:
                reason = server_message(exc)[:200]
                raise IndexProblem(
                    f"cannot create the index {spec.name} ({spec.why}): {reason}",
                    hint=f"drop the conflicting index, then run evstream again; in mongosh: "
                    f"{spec.mongosh()}",
                ) from None
            if exc.code == DUPLICATE_KEY and spec.unique:
                raise IndexProblem(
                    "cannot create the unique {stream, version} index: the log already holds a "
                    "stream with a version twice",
                    hint="run 'evstream check' to find them",
                ) from None
            raise
    if any(spec.unique for spec, _, _ in index_findings(store.events.list_indexes())):
        raise IndexProblem(
            "the unique {stream, version} index could not be created (the server ignored it)",
            hint="run 'evstream check' for the log's indexes",
        )
    store.indexes_checked = True


def now_utc() -> datetime:
    """The current time at BSON's millisecond precision, so printed and stored agree."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def build_document(event: EventInput, version: int, ts: datetime) -> dict[str, Any]:
    """The stored form of an event (docs/data-model.md, the `events` table)."""
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
    return doc


def check_size(doc: Doc, line: int | None = None) -> None:
    """Refuse a document over MongoDB's 16 MB limit before anything is sent."""
    size = len(bson_encode(doc))
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidEvent(
            f"event is {size / 1024 / 1024:.1f} MB; MongoDB stores documents up to 16 MB",
            line=line,
        )


def refused(event: EventInput, error: dict[str, Any]) -> EventRefused:
    """The error for an event the server would not store for its content (not a duplicate key):
    a collection validator (code 121), a value the server cannot store …"""
    where = f"line {event.line}: " if event.line is not None else ""
    reason = " ".join(str(error.get("errmsg") or "no reason given").split())[:200]
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
    doc = store.events.find_one(
        {"stream": stream},
        sort=[("version", -1)],
        projection={"version": 1, "_id": 1},
    )
    return valid_head(stream, doc.get("version"), doc.get("_id")) if doc else 0


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
    """Append one event at its stream's end (or at expected_version + 1), safe under concurrency."""
    events = store.events
    if event.id is not None:
        existing = events.find_one({"_id": event.id})
        if existing is not None:
            return AppendResult(existing, True)
    for attempt in range(max_attempts):
        try:
            head = stream_head(store, event.stream)
        except EventRefused as exc:
            raise EventRefused(f"{exc.message}; nothing was written") from None
        if event.expected_version is not None and head != event.expected_version:
            raise conflict(event, head)
        doc = build_document(event, head + 1, now_utc())
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
        if unknown:
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
        free = free_slots(self.store, pending, self.heads)
        for i, event in enumerate(pending):
            head = self.heads[event.stream]
            if event.expected_version is not None and event.expected_version != head:
                if (event.stream, event.version) in free:  # a restored archive fills its place
                    if event.stored is None:
                        event.stored = build_document(event, event.version or 0, ts)
                    event.stored["version"] = event.version
                    docs.append(event.stored)
                    continue
                return docs, i
            if event.stored is None:  # kept: a retry stores the same _id, so never twice
                event.stored = build_document(event, head + 1, ts)
            doc = event.stored
            doc["version"] = head + 1
            self.heads[event.stream] = head + 1
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
    """The stored events with these ids, in (stream, version) order."""
    found = store.events.find({"_id": {"$in": ids}}).sort([("stream", 1), ("version", 1)])
    return list(found)


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
