"""The queries behind `evstream top`, `check --consumers` and `status -o prometheus`
(docs/operating.md): a few cheap ones per refresh, whatever the log's size.

The log's size comes from metadata, its newest and oldest events from the `ts` index, the
consumers from evstream's own small collections (watch checkpoints, projection checkpoints,
dead letters). Only a consumer behind the newest event costs a count, capped, over the `ts`
index (`MongoStore.count_log_after_capped`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from evstream.storage.changes import log_query
from evstream.storage.codec import aware
from evstream.storage.delivery import DEAD_LETTERS
from evstream.storage.errors import translate_errors
from evstream.storage.mongo import CHECKPOINTS, Doc, MongoStore
from evstream.storage.projections import PROJECTIONS, type_filter


def log_head(store: MongoStore) -> dict[str, Any]:
    """The log's size (from metadata; documents that are not events included) and its newest
    event's `_id` and `ts` (None for an empty log)."""
    with translate_errors(store.uri):
        size = store.log_size()
        newest = store.edge_event(newest=True) if size else None
    return {
        "events": size,
        "newest": None if newest is None else {"_id": newest.get("_id"), "ts": _ts(newest)},
    }


def oldest_ts(store: MongoStore) -> datetime | None:
    """The oldest event's ts (from the `ts` index)."""
    with translate_errors(store.uri):
        doc = store.edge_event(newest=False)
    return None if doc is None else _ts(doc)


def consumer_documents(store: MongoStore) -> tuple[list[Doc], list[Doc]]:
    """Every watch checkpoint (its window aside) and every projection checkpoint."""
    with translate_errors(store.uri):
        names = set(store.db.list_collection_names())
        watches = (
            list(store.db[CHECKPOINTS].find({}, {"token": 0}).sort("_id", 1))
            if CHECKPOINTS in names
            else []
        )
        projections = (
            list(store.db[PROJECTIONS].find().sort("_id", 1)) if PROJECTIONS in names else []
        )
        letters: dict[str, int] = {}
        if DEAD_LETTERS in names:
            rows = store.db[DEAD_LETTERS].aggregate(
                [{"$group": {"_id": "$checkpoint", "n": {"$sum": 1}}}]
            )
            letters = {str(row["_id"]): int(row["n"]) for row in rows}
    for doc in watches:
        doc["dead_letter_count"] = letters.get(str(doc["_id"]), 0)
    return watches, projections


def lag_after(
    store: MongoStore,
    *,
    filters: Mapping[str, Any] | None,
    types: list[str] | None,
    ts: datetime,
    ident: Any,
    cap: int,
    size: int | None,
) -> int | None:
    """Events (with a watch's filters or a projection's types) after (ts, ident), at most
    `cap`; None where that cannot be counted cheaply."""
    query = log_query(filters, store.fieldmap) if filters else type_filter(types, store)
    with translate_errors(store.uri):
        return store.count_log_after_capped(query, ts, ident, cap, size=size)


def _ts(doc: Mapping[str, Any]) -> datetime | None:
    ts = doc.get("ts")
    return aware(ts) if isinstance(ts, datetime) else None
