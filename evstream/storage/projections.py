"""What a projection rebuild reads and writes (docs/projections.md, docs/storage.md).

The engine (`evstream.projection`) speaks in event types, streams, states and checkpoints; the
query shapes, the conditional writes and the driver's errors are here. Every function turns
driver errors into evstream errors (`translate_errors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError, CursorNotFound, DuplicateKeyError

from evstream.errors import EvstreamError
from evstream.events import event_problem
from evstream.storage.errors import duplicates_only, translate_errors
from evstream.storage.mongo import MongoStore

PROJECTIONS = "evstream_projections"
READ_BATCH = 2000
# The whole stored event: handlers get what was published (data, meta …).
EVENT_FIELDS: dict[str, int] | None = None
MAX_WRITE_ATTEMPTS = 20
NOT_EVENT_FIELDS = {"_id": 1, "stream": 1, "version": 1, "type": 1, "ts": 1}

Doc = dict[str, Any]
Types = Iterable[str] | None


def type_filter(types: Types, store: MongoStore | None = None) -> Doc:
    """The query part that reads only the declared types (every type when None), on the map's
    type path."""
    if types is None:
        return {}
    path = "type" if store is None else store.fieldmap.type
    return {path: {"$in": list(types)}}


def stream_order(store: MongoStore) -> list[tuple[str, int]]:
    """A stream's order as a sort: (stream, version), the `{stream: 1, version: 1}` index's
    order, so MongoDB sorts nothing; on a log without versions (stream, ts, _id)."""
    return store.stream_sort()


# --- reading the log (canonical events: docs/adopting.md) ----------------------------------------


def read_log(store: MongoStore, types: Types) -> Iterator[Doc]:
    """The declared types' events in stream order (`stream_order`)."""
    with translate_errors(store.uri):
        yield from store.read_events(
            lambda fields: (
                store.events.find(type_filter(types, store), fields or EVENT_FIELDS)
                .sort(stream_order(store))
                .batch_size(READ_BATCH)
            )
        )


def read_not_events(store: MongoStore, types: Types) -> Iterator[Doc]:
    """The documents of the declared types that are not events (`event_problem` names a
    problem), in (stream, version) order as `read_log` reads them: one query over the whole log,
    so full and incremental runs count the same ones (docs/projections.md, "Documents that are
    not events"). Only the fields `event_problem` looks at are read."""
    fm = store.fieldmap
    fields = NOT_EVENT_FIELDS
    if fm.shaped:  # the same fields where the map keeps them, read as canonical events
        fields = {path: 1 for name, path in fm.paths().items() if name not in ("data", "meta")}
    with translate_errors(store.uri):
        cursor = store.not_events_cursor(type_filter(types, store), fields)
        for doc in store.canonical_all(cursor):
            if event_problem(doc, fm.versioned) is not None:
                yield doc


def read_streams(store: MongoStore, streams: list[str], types: Types) -> Iterator[Doc]:
    """The declared types' events of these streams, in stream order."""
    if not streams:
        return
    query = {store.fieldmap.stream: {"$in": streams}, **type_filter(types, store)}
    with translate_errors(store.uri):
        yield from store.read_events(
            lambda fields: (
                store.events.find(query, fields or EVENT_FIELDS)
                .sort(stream_order(store))
                .batch_size(READ_BATCH)
            )
        )


def read_stream_after(store: MongoStore, stream: str, after: int, types: Types) -> list[Doc]:
    """The declared types' events of one stream past version `after`, in version order."""
    fm = store.fieldmap
    assert fm.version is not None
    query = {fm.stream: stream, fm.version: {"$gt": after}, **type_filter(types, store)}
    with translate_errors(store.uri):
        return list(
            store.read_events(
                lambda fields: (
                    store.events.find(query, fields or EVENT_FIELDS)
                    .sort(fm.version, 1)
                    .batch_size(READ_BATCH)
                )
            )
        )


def read_window(store: MongoStore, types: Types, since: datetime) -> Iterator[Doc]:
    """The declared types' events with `ts` from `since` on, in `ts` order (the `{ts: 1}` index
    serves the range and the order; the type is a filter on what it finds)."""
    fm = store.fieldmap
    query = {fm.ts: store.ts_range("$gte", since), **type_filter(types, store)}
    with translate_errors(store.uri):
        yield from store.read_events(
            lambda fields: (
                store.events.find(query, fields or EVENT_FIELDS)
                .sort(fm.ts, 1)
                .batch_size(READ_BATCH)
            )
        )


def count_events(
    store: MongoStore,
    types: Types,
    *,
    since: datetime | None = None,
    before: datetime | None = None,
) -> int:
    """Events of the declared types with since <= ts < before, compared as `find` compares."""
    query: Doc = type_filter(types, store)
    ts: Doc = {}
    if since is not None:
        ts.update(store.ts_range("$gte", since))
    if before is not None:
        ts.update(store.ts_range("$lt", before))
    if ts:
        query[store.fieldmap.ts] = ts
    with translate_errors(store.uri):
        if not query:
            return int(store.events.estimated_document_count())
        return store.count(store.events, query)


def count_after(store: MongoStore, types: Types, after: datetime | None) -> int:
    """Events of the declared types with a `ts` after `after` (all of them for None)."""
    query = type_filter(types, store)
    if after is not None:
        query[store.fieldmap.ts] = store.ts_range("$gt", after)
    with translate_errors(store.uri):
        return store.count(store.events, query)


def newest_ts(store: MongoStore, types: Types) -> datetime | None:
    """The largest `ts` among the declared types' events (from the `ts` index), or None."""
    with translate_errors(store.uri):
        path = store.fieldmap.ts
        doc = store.events.find_one(type_filter(types, store), {path: 1}, sort=[(path, -1)])
    ts = store.canonical(doc).get("ts") if doc else None
    return ts if isinstance(ts, datetime) else None


def live_streams(store: MongoStore, streams: list[str], types: Types) -> set[str]:
    """Which of these streams have at least one event (of the declared types) fit to fold."""
    alive: set[str] = set()
    if not streams:
        return alive
    with translate_errors(store.uri):
        query = {store.fieldmap.stream: {"$in": streams}, **type_filter(types, store)}
        versioned = store.fieldmap.versioned
        for doc in store.canonical_all(store.events.find(query)):
            if doc["stream"] not in alive and event_problem(doc, versioned) is None:
                alive.add(doc["stream"])
    return alive


def declared_event_at_or_after(store: MongoStore, stream: str, version: int, types: Types) -> bool:
    """Whether the log holds an event of the declared types in `stream` at `version` or later
    (on a log without versions, where a document's version counts its events: at least
    `version` of them)."""
    fm = store.fieldmap
    with translate_errors(store.uri):
        if fm.version is None:
            query = {fm.stream: stream, **type_filter(types, store)}
            return store.count(store.events, query) >= version
        doc = store.events.find_one(
            {fm.stream: stream, fm.version: {"$gte": version}, **type_filter(types, store)},
            {"_id": 1},
        )
    return doc is not None


# --- the projection's collection -----------------------------------------------------------------


def documents_by_id(coll: Any) -> Iterator[Doc]:
    """All documents of a projection collection in `_id` order, through one cursor.

    The cursor can sit idle while the log is read (long streams) and the server may time it out;
    it is then reopened past the last document seen.
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


def stored_documents(store: MongoStore, collection: str) -> Iterator[Doc]:
    """`documents_by_id` of a projection's collection, with driver errors translated."""
    with translate_errors(store.uri):
        yield from documents_by_id(store.collection(collection))


def find_documents(store: MongoStore, collection: str, ids: list[str]) -> dict[Any, Doc]:
    """The stored documents of these streams, by `_id`."""
    with translate_errors(store.uri):
        return {d["_id"]: d for d in store.collection(collection).find({"_id": {"$in": ids}})}


def has_documents(store: MongoStore, collection: str) -> bool:
    """Whether the projection's collection holds any document."""
    with translate_errors(store.uri):
        return store.collection(collection).find_one({}, {"_id": 1}) is not None


@dataclass
class WriteCounts:
    """What one bulk write did."""

    created: int = 0
    updated: int = 0
    superseded: int = 0


def write_documents(
    store: MongoStore,
    collection: str,
    puts: list[tuple[Doc, Doc | None]],
    *,
    authoritative: bool,
    types: Types,
) -> WriteCounts:
    """Write whole documents `(new, old)` in one unordered bulk write, never moving one back.

    A document that was not there when read is inserted (cheaper than an upsert); a stored one is
    replaced on condition that its `version` is at or below the new one. Each write is one whole
    document (a `ReplaceOne` whose replacement carries its `_id`, which nx-27017 needs and
    MongoDB accepts), so a reader sees the old or the new document, never a mix.
    """
    counts = WriteCounts()
    if not puts:
        return counts
    coll = store.collection(collection)
    ops = [
        InsertOne(doc)
        if old is None
        else ReplaceOne({"_id": doc["_id"], "version": {"$lte": doc["version"]}}, doc, upsert=True)
        for doc, old in puts
    ]
    with translate_errors(store.uri):
        failed = bulk_conditional(coll, ops)
        for i, (doc, old) in enumerate(puts):
            if i in failed:
                _resolve(store, coll, doc, counts, authoritative=authoritative, types=types)
            elif old is None:
                counts.created += 1
            else:
                counts.updated += 1
    return counts


def bulk_conditional(coll: Any, ops: list[Any]) -> set[int]:
    """Run conditional writes in one unordered bulk write; the indexes of those that met a
    document whose condition failed (a duplicate key on the upsert), to resolve one by one."""
    try:
        coll.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        return duplicates_only(exc)
    return set()


def _resolve(
    store: MongoStore,
    coll: Any,
    doc: Doc,
    counts: WriteCounts,
    *,
    authoritative: bool,
    types: Types,
) -> None:
    """A conditional write found a newer (or racing) document: decide, retry, or give way.

    A full rebuild is authoritative: a stored document ahead of the log (events were deleted)
    is replaced; one that a concurrent run moved to a version the log holds is left alone.
    """
    stream, version = doc["_id"], doc["version"]
    for _ in range(MAX_WRITE_ATTEMPTS):
        stored = coll.find_one({"_id": stream})
        if stored is None:
            try:
                coll.insert_one(doc)
                counts.created += 1
                return
            except DuplicateKeyError:
                continue
        held = stored.get("version")
        if type(held) is int and held > version:
            if not authoritative or declared_event_at_or_after(store, stream, held, types):
                counts.superseded += 1  # a concurrent run applied more already
                return
            condition: Doc = {"_id": stream, "version": held}
        elif type(held) is int:
            condition = {"_id": stream, "version": held}
        else:
            condition = {"_id": stream}  # not a document evstream wrote
        if coll.replace_one(condition, doc).matched_count:
            counts.updated += 1
            return
    raise EvstreamError(
        f"could not write the document of stream {stream!r} in {coll.name}: "
        f"{MAX_WRITE_ATTEMPTS} attempts raced other writers"
    )


def delete_documents(store: MongoStore, collection: str, ids: list[Any]) -> int:
    """Delete these documents; how many went."""
    if not ids:
        return 0
    with translate_errors(store.uri):
        return int(store.collection(collection).delete_many({"_id": {"$in": ids}}).deleted_count)


# --- checkpoints ---------------------------------------------------------------------------------


def load_checkpoint(store: MongoStore, key: str) -> Doc | None:
    """A projection part's checkpoint, if a run of it ever finished."""
    with translate_errors(store.uri):
        return store.collection(PROJECTIONS).find_one({"_id": key})


def save_checkpoint(store: MongoStore, doc: Doc) -> None:
    """Record a finished run: one whole-document write, so dates stay BSON dates on nx-27017."""
    with translate_errors(store.uri):
        store.collection(PROJECTIONS).replace_one({"_id": doc["_id"]}, doc, upsert=True)


def all_checkpoints(store: MongoStore) -> list[Doc]:
    """Every projection checkpoint, by `_id`."""
    with translate_errors(store.uri):
        return list(store.collection(PROJECTIONS).find().sort("_id", 1))
