"""The reads behind `evstream check` (docs/data-model.md, "evstream check"): one streamed read of
the log in (stream, version) order, its indexes, and evstream's own small collections.

Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterator

from pymongo.errors import OperationFailure

from evstream.storage.mongo import CHECKPOINTS, Doc, MongoStore
from evstream.storage.projections import PROJECTIONS, stream_order

# The fields the check looks at: the whole payload (`data`, `meta`) is never read.
CHECK_FIELDS = {"_id": 1, "stream": 1, "version": 1, "type": 1, "ts": 1}
SCAN_BATCH = 10_000
NAMESPACE_NOT_FOUND = 26


def log_exists(store: MongoStore) -> bool:
    """Whether the database has an `events` collection at all."""
    # nx-27017 ignores a listCollections name filter: compare the names here.
    return store.log_name in store.db.list_collection_names()


def estimated_documents(store: MongoStore) -> int:
    """The log's size from collection metadata (for progress, not for figures)."""
    return int(store.events.estimated_document_count())


def scan_log(store: MongoStore, batch_size: int = SCAN_BATCH) -> Iterator[Doc]:
    """Every document of the log, sorted by (stream, version), with only CHECK_FIELDS where
    a projection makes the read cheaper (`MongoStore.cheap_projection`; not on nx-27017).

    Streamed in batches, so memory stays flat. MongoDB walks the unique {stream, version} index
    for this order; without it (the case `check` reports) the server sorts, spilling to disk
    rather than failing at its in-memory sort limit.
    """
    fm = store.fieldmap
    fields = CHECK_FIELDS
    if fm.shaped:
        fields = {path: 1 for name, path in fm.paths().items() if name not in ("data", "meta")}
    cursor = store.events.find(
        {},
        fields if store.cheap_projection else None,
        sort=stream_order(store),
        batch_size=batch_size,
        allow_disk_use=True,
    )
    with cursor:
        yield from store.canonical_all(cursor)


def log_indexes(store: MongoStore) -> list[Doc]:
    """The log's indexes as listIndexes gives them ([] when there is no log yet)."""
    try:
        return [dict(ix) for ix in store.events.list_indexes()]
    except OperationFailure as exc:
        if exc.code == NAMESPACE_NOT_FOUND:
            return []
        raise


def checkpoint_documents(store: MongoStore) -> Iterator[Doc]:
    """The saved watch checkpoints (one small document each), by name."""
    yield from store.collection(CHECKPOINTS).find().sort("_id", 1)


def projection_documents(store: MongoStore) -> Iterator[Doc]:
    """The projections' checkpoints (one small document per projection), by name."""
    yield from store.collection(PROJECTIONS).find().sort("_id", 1)
