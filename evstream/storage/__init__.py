"""The storage boundary: the only package that talks to MongoDB (docs/storage.md).

Services (publishing, watching, projection, overview, bench) call what this package exports and
never import pymongo or bson. `connect` picks the adapter for the server it finds: `MongoStore`,
written to MongoDB's documentation, or `Nx27017Store` with the embedded dev store's workarounds.
"""

from evstream.storage.connection import DEFAULT_TIMEOUT_MS, check_db_name, connect
from evstream.storage.errors import (
    DUPLICATE_KEY,
    HISTORY_LOST_CODES,
    NO_CHANGE_STREAMS_CODES,
    driver_message,
    is_retryable,
    translate_errors,
)
from evstream.storage.log import (
    LOG_INDEXES,
    STREAM_VERSION_INDEX,
    Appender,
    AppendResult,
    BatchResult,
    append_one,
    build_document,
    check_size,
    drop_owned,
    ensure_indexes,
    events_by_id,
    now_utc,
    stream_head,
    stream_heads,
)
from evstream.storage.mongo import CHECKPOINTS, EVENTS, OWN_PREFIX, SESSIONS, MongoStore
from evstream.storage.nx27017 import Nx27017Store

Store = MongoStore

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_TIMEOUT_MS",
    "DUPLICATE_KEY",
    "EVENTS",
    "HISTORY_LOST_CODES",
    "NO_CHANGE_STREAMS_CODES",
    "LOG_INDEXES",
    "OWN_PREFIX",
    "SESSIONS",
    "STREAM_VERSION_INDEX",
    "AppendResult",
    "Appender",
    "BatchResult",
    "MongoStore",
    "Nx27017Store",
    "Store",
    "append_one",
    "build_document",
    "check_db_name",
    "check_size",
    "connect",
    "driver_message",
    "drop_owned",
    "ensure_indexes",
    "events_by_id",
    "is_retryable",
    "now_utc",
    "stream_head",
    "stream_heads",
    "translate_errors",
]
