"""What a keyed projection's runs read and write (docs/projections.md, "Keyed projections").

A key is a path into the canonical event, so the log is read by the key's stored path: sorted by
it for a full run, queried by one value (or one bucket's dates) to refold a key, served by an
index `{key path: 1, ts: 1}`. Documents are written whole, conditionally on their `version`
(the number of the key's events they fold), as stream projections' are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import bson
from pymongo import ReplaceOne
from pymongo.errors import DuplicateKeyError

from evstream.errors import EvstreamError
from evstream.storage.errors import translate_errors
from evstream.storage.mongo import MongoStore
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
