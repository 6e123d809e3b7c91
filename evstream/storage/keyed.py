"""What a keyed projection's runs read and write (docs/projections.md, "Keyed projections").

A key is a path into the canonical event, so the log is read by the key's stored path: sorted by
it for a full run, queried by one value (or one bucket's dates) to refold a key, served by an
index `{key path: 1, ts: 1}`. Documents are written whole, conditionally on their `version`
(the number of the key's events they fold), as stream projections' are.

After an archive, `evstream_archived_keys` holds each keyed projection's state of each key at
the archive's edge (docs/lifecycle.md, "Keyed projections and archives"): documents `key|…`
(the state, and `through`, the log position of the key's last archived event) and `stream|…`
(the keys that a stream's archived events fed, under the stream's keyed hash, for erase).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import bson
from pymongo import ReplaceOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from evstream.errors import EvstreamError
from evstream.storage.errors import duplicates_only, translate_errors
from evstream.storage.mongo import OWN_PREFIX, MongoStore
from evstream.storage.projections import (
    EVENT_FIELDS,
    READ_BATCH,
    Types,
    bulk_conditional,
    type_filter,
)

Doc = dict[str, Any]
# MongoDB's limit on a document (BSON bytes).
MAX_DOCUMENT = 16 * 1024 * 1024
MAX_WRITE_ATTEMPTS = 20
ARCHIVED_KEYS = OWN_PREFIX + "archived_keys"
SNAPSHOT_WRITE_BATCH = 500


def stored_path(store: MongoStore, path: str) -> str:
    """Where the log stores the key's canonical path (`data.tenant` → `payload.tenant`)."""
    root, _, rest = path.partition(".")
    fm = store.fieldmap
    base = {"stream": fm.stream, "type": fm.type, "data": fm.data, "meta": fm.meta,
            "ts": fm.ts, "_id": "_id"}[root]  # fmt: skip
    return f"{base}.{rest}" if rest else base


def log_order(store: MongoStore) -> list[tuple[str, int]]:
    """Log order across streams: (ts, stream, version), or (ts, _id) without versions."""
    fm = store.fieldmap
    if fm.version is not None:
        return [(fm.ts, 1), (fm.stream, 1), (fm.version, 1)]
    return [(fm.ts, 1), ("_id", 1)]


def ensure_key_index(store: MongoStore, path: str) -> None:
    """The index that serves a key's history: {key path: 1, ts: 1}."""
    with translate_errors(store.uri):
        store.events.create_index([(stored_path(store, path), 1), (store.fieldmap.ts, 1)])


def key_order(store: MongoStore, path: str) -> list[tuple[str, int]]:
    """The key's path, then log order: each key's events come together, in log order (a
    bucket of ts: log order alone, already by bucket)."""
    where = stored_path(store, path)
    order = log_order(store)
    return order if where == store.fieldmap.ts else [(where, 1), *order]


def read_by_key(store: MongoStore, types: Types, path: str) -> Iterator[Doc]:
    """Every document of the declared types in `key_order` (events without the key first)."""
    with translate_errors(store.uri):
        yield from store.canonical_all(
            store.events.find(type_filter(types, store), EVENT_FIELDS)
            .sort(key_order(store, path))
            .batch_size(READ_BATCH)
        )


def read_keys(
    store: MongoStore,
    types: Types,
    path: str,
    keys: list[Any],
    span: tuple[datetime, datetime] | None = None,
) -> Iterator[Doc]:
    """The events of these keys in `key_order`, in one query: `$in` on the key's path, or for
    bucket keys the dates from the first bucket's start to the last one's end (`span`; events
    of buckets in between that are not wanted are the caller's to pass over)."""
    where = stored_path(store, path)
    if span is None:
        condition: Any = {"$in": keys}
    elif where == store.fieldmap.ts:
        condition = {**store.ts_range("$gte", span[0]), **store.ts_range("$lt", span[1])}
    else:
        condition = {"$gte": span[0], "$lt": span[1]}
    query = {where: condition, **type_filter(types, store)}
    with translate_errors(store.uri):
        yield from store.canonical_all(
            store.events.find(query, EVENT_FIELDS)
            .sort(key_order(store, path))
            .batch_size(READ_BATCH)
        )


def document_size(doc: Doc) -> int:
    """The document's size as MongoDB stores it (BSON bytes)."""
    return len(bson.encode(doc))


def stored_keys(store: MongoStore, collection: str) -> Iterator[Any]:
    """The `_id` of every stored document of the projection."""
    with translate_errors(store.uri):
        for doc in store.collection(collection).find({}, {"_id": 1}).batch_size(READ_BATCH):
            yield doc["_id"]


def find_keyed(store: MongoStore, collection: str, keys: Iterable[Any]) -> dict[Any, Doc]:
    """The stored documents of these keys, by key."""
    wanted = list(keys)
    if not wanted:
        return {}
    with translate_errors(store.uri):
        return {d["_id"]: d for d in store.collection(collection).find({"_id": {"$in": wanted}})}


def write_keyed(store: MongoStore, collection: str, docs: list[Doc]) -> int:
    """Write whole documents, each only over one with a `version` at or below its own (a run
    that folded more of the key's events wins); how many a newer one kept out."""
    if not docs:
        return 0
    coll = store.collection(collection)
    ops = [
        ReplaceOne({"_id": d["_id"], "version": {"$lte": d["version"]}}, d, upsert=True)
        for d in docs
    ]
    with translate_errors(store.uri):
        failed = bulk_conditional(coll, ops)
        superseded = 0
        for i in sorted(failed):
            superseded += _resolve(coll, docs[i])
    return superseded


def _resolve(coll: Any, doc: Doc) -> int:
    """A stored document held a higher version (1: kept), or one not written by evstream
    (replaced), or a racing insert (retried)."""
    for _ in range(MAX_WRITE_ATTEMPTS):
        stored = coll.find_one({"_id": doc["_id"]})
        if stored is None:
            try:
                coll.insert_one(doc)
                return 0
            except DuplicateKeyError:
                continue
        held = stored.get("version")
        if type(held) is int and held > doc["version"]:
            return 1
        condition = {"_id": doc["_id"], "version": held}
        if coll.replace_one(condition, doc).matched_count:
            return 0
    raise EvstreamError(
        f"could not write the document of key {doc['_id']!r} in {coll.name}: "
        f"{MAX_WRITE_ATTEMPTS} attempts raced other writers"
    )


# --- snapshots at an archive's edge -------------------------------------------------------------


def key_tag(key: Any) -> str:
    """A key value as text that keeps its type (1 and "1" are two keys)."""
    if isinstance(key, datetime):
        moment = key if key.tzinfo is not None else key.replace(tzinfo=timezone.utc)
        return "d:" + moment.astimezone(timezone.utc).isoformat()
    return ("i:" if type(key) is int else "s:") + str(key)


def snapshot_id(projection: str, fold_version: int, key: Any) -> str:
    """The `_id` of a key's snapshot."""
    return f"key|{projection}|{fold_version}|{key_tag(key)}"


def stream_keys_id(projection: str, fold_version: int, digest: str) -> str:
    """The `_id` of the record of the keys a stream's archived events fed (by its hash)."""
    return f"stream|{projection}|{fold_version}|{digest}"


def _of(projection: str, fold_version: int, kind: str) -> Doc:
    return {"kind": kind, "projection": projection, "fold_version": fold_version}


def any_key_snapshots(
    store: MongoStore, projection: str, fold_version: int, kind: str = "key"
) -> bool:
    """Whether an archive kept snapshots of this projection's keys (`kind` "stream": records
    of the keys streams fed)."""
    with translate_errors(store.uri):
        coll = store.collection(ARCHIVED_KEYS)
        return coll.find_one(_of(projection, fold_version, kind), {"_id": 1}) is not None


def key_snapshots(store: MongoStore, projection: str, fold_version: int) -> dict[str, Doc]:
    """Every key snapshot of a projection, by `key_tag`."""
    with translate_errors(store.uri):
        found = store.collection(ARCHIVED_KEYS).find(_of(projection, fold_version, "key"))
        return {key_tag(d["key"]): d for d in found.batch_size(READ_BATCH)}


def sorted_key_snapshots(store: MongoStore, projection: str, fold_version: int) -> Iterator[Doc]:
    """A projection's key snapshots in the order of their keys (as the log's key sort)."""
    with translate_errors(store.uri):
        yield from (
            store.collection(ARCHIVED_KEYS)
            .find(_of(projection, fold_version, "key"))
            .sort("key", 1)
            .batch_size(READ_BATCH)
        )


def key_snapshots_for(
    store: MongoStore, projection: str, fold_version: int, keys: list[Any]
) -> dict[str, Doc]:
    """The snapshots of these keys, by `key_tag`."""
    if not keys:
        return {}
    ids = [snapshot_id(projection, fold_version, k) for k in keys]
    with translate_errors(store.uri):
        found = store.collection(ARCHIVED_KEYS).find({"_id": {"$in": ids}})
        return {key_tag(d["key"]): d for d in found}


def save_archived_keys(store: MongoStore, docs: list[Doc], *, new: bool = False) -> None:
    """Write key snapshots and stream records whole (a second write of the same is harmless):
    inserted when `new` (none stored before: cheaper than upserts; one stored meanwhile, by a
    run interrupted after it, is replaced), else replaced."""
    coll = store.collection(ARCHIVED_KEYS)
    with translate_errors(store.uri):
        for i in range(0, len(docs), SNAPSHOT_WRITE_BATCH):
            part = docs[i : i + SNAPSHOT_WRITE_BATCH]
            if new:
                try:
                    coll.insert_many(part, ordered=False)
                    continue
                except BulkWriteError as exc:
                    part = [part[i] for i in sorted(duplicates_only(exc))]
            coll.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in part], ordered=False
            )


def stream_keys(
    store: MongoStore, projection: str, fold_version: int, digests: list[str]
) -> dict[str, Doc]:
    """The records of the keys these streams' archived events fed, by stream hash."""
    if not digests:
        return {}
    ids = [stream_keys_id(projection, fold_version, d) for d in digests]
    with translate_errors(store.uri):
        found = store.collection(ARCHIVED_KEYS).find({"_id": {"$in": ids}})
        return {str(d["stream"]): d for d in found}


def delete_archived_keys(store: MongoStore, ids: list[str]) -> int:
    """Delete these snapshots and records; how many went."""
    if not ids:
        return 0
    with translate_errors(store.uri):
        coll = store.collection(ARCHIVED_KEYS)
        return int(coll.delete_many({"_id": {"$in": ids}}).deleted_count)


def read_before(store: MongoStore, types: Types, before: datetime) -> Iterator[tuple[Any, Doc]]:
    """The events of these types with `ts` before `before` (and up to a second more: nx-27017
    compares whole seconds), in log order: `(stored _id, canonical event)`."""
    fm = store.fieldmap
    upper = before + timedelta(seconds=1)
    cond = store.ts_before(upper) if fm.ts_unit == "date" else store.ts_range("$lt", upper)
    query = {fm.ts: cond, **type_filter(types, store)}
    with translate_errors(store.uri):
        cursor = store.events.find(query).sort(log_order(store)).batch_size(READ_BATCH)
        for doc in cursor:
            yield doc["_id"], (fm.watched(doc) if fm.translates else doc)


def stream_events(store: MongoStore, types: Types, stream: str) -> Iterator[Doc]:
    """A stream's events of these types, canonical (the `{stream, version}` index serves it)."""
    query = {store.fieldmap.stream: stream, **type_filter(types, store)}
    with translate_errors(store.uri):
        yield from store.canonical_all(
            store.events.find(query, EVENT_FIELDS).batch_size(READ_BATCH)
        )


def stream_records(store: MongoStore, digest: str) -> list[Doc]:
    """The records, of every keyed projection, of the keys a stream's archived events fed."""
    with translate_errors(store.uri):
        return list(store.collection(ARCHIVED_KEYS).find({"kind": "stream", "stream": digest}))


def delete_archive_run(store: MongoStore, run: str) -> None:
    """Forget an archive run that deleted nothing (a cancelled one)."""
    from evstream.storage.lifecycle import ARCHIVES

    with translate_errors(store.uri):
        store.collection(ARCHIVES).delete_one({"_id": run})
