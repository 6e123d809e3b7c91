"""What `watch --exec` and `--partition` keep (docs/delivery.md): the dead letters of
`--on-failure dead-letter`, and which checkpoint parts exist.

One document per change that a handler kept failing on, in `evstream_dead_letters`: the change
as its JSON line showed it, the checkpoint (and part) it came through, the error, the attempts
and the time. Nothing reads them back automatically: `status` counts them per checkpoint, and a
person replays them (`mongoexport` → the handler) once the handler is fixed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bson import json_util

from evstream.storage.mongo import CHECKPOINTS, OWN_PREFIX, MongoStore

DEAD_LETTERS = OWN_PREFIX + "dead_letters"


def dead_letter(
    store: MongoStore,
    checkpoint: str,
    lines: list[str],
    ids: list[Any],
    error: str,
    attempts: int,
    last_stderr: str = "",
) -> None:
    """Set a failed batch's changes aside, one document each, in one unordered insert."""
    at = datetime.now(timezone.utc)
    docs = [
        {
            "checkpoint": checkpoint,
            "change_id": ident,
            "change": json_util.loads(line),
            "error": error,
            "stderr": last_stderr,
            "attempts": attempts,
            "at": at,
        }
        for line, ident in zip(lines, ids, strict=True)
    ]
    if docs:
        store.db[DEAD_LETTERS].insert_many(docs, ordered=False)


def dead_letter_counts(store: MongoStore) -> dict[str, int]:
    """How many dead letters each checkpoint has."""
    rows = store.db[DEAD_LETTERS].aggregate([{"$group": {"_id": "$checkpoint", "n": {"$sum": 1}}}])
    return {str(row["_id"]): int(row["n"]) for row in rows}


def checkpoint_names(store: MongoStore) -> list[str]:
    """The names of every saved watch checkpoint."""
    return [str(doc["_id"]) for doc in store.db[CHECKPOINTS].find({}, {"_id": 1})]


def checkpoint_names_at(uri: str, db: str, *, timeout_ms: int) -> list[str]:
    """The checkpoint names in a database, asked of a server with a short timeout (for shell
    completion, which must answer at once or not at all)."""
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        return [str(doc["_id"]) for doc in client[db][CHECKPOINTS].find({}, {"_id": 1})]
    finally:
        client.close()
