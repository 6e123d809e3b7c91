"""Everything that talks to MongoDB, through pymongo. Driver errors become evstream errors here."""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pymongo
from bson import Decimal128, MaxKey, MinKey, Regex, Timestamp
from bson import encode as bson_encode
from pymongo import MongoClient, uri_parser
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    InvalidName,
    InvalidURI,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteError,
)

from evstream.errors import (
    ConcurrencyConflict,
    EventRefused,
    EvstreamError,
    FeatureUnsupported,
    InvalidInput,
    ServerUnreachable,
)
from evstream.events import MAX_DOCUMENT_BYTES, EventInput, InvalidEvent, new_event_id
from evstream.settings import Settings, mask_uri, scrub

EVENTS = "events"
SESSIONS = "sessions"
CHECKPOINTS = "evstream_checkpoints"
# Collections evstream owns besides `events` and `sessions` start with this prefix.
OWN_PREFIX = "evstream_"
DEFAULT_TIMEOUT_MS = 5000
AUTH_ERROR_CODES = {18, 13, 11}  # AuthenticationFailed, Unauthorized, UserNotFound
NO_CHANGE_STREAMS_CODES = {40573}  # "The $changeStream stage is only supported on replica sets"
_DB_NAME = re.compile(r'^[^/\\. "$*<>:|?\x00]{1,63}$')


@dataclass
class Store:
    """An open connection to the server evstream works against, and the database it uses."""

    client: MongoClient[dict[str, Any]]
    db: Database[dict[str, Any]]
    uri: str
    embedded: bool
    description: str

    @property
    def events(self) -> Collection[dict[str, Any]]:
        """The event log."""
        return self.db[EVENTS]

    def collection(self, name: str) -> Collection[dict[str, Any]]:
        """Any collection of the database."""
        return self.db[name]

    @property
    def is_nx27017(self) -> bool:
        """Whether the server is nx-27017 (see `NX27017_QUIRKS`), known from buildInfo."""
        if self._nx is None:
            try:
                info = self.client.server_info()
            except PyMongoError:
                info = {}
            self._version = info.get("version")
            self._nx = not self._version
        return self._nx

    @property
    def server_version(self) -> str | None:
        """MongoDB's version from the same buildInfo; None for nx-27017, which gives none."""
        return None if self.is_nx27017 else str(self._version)

    _nx: bool | None = field(default=None, repr=False)
    _version: str | None = field(default=None, repr=False)

    def unstorable(self, event: EventInput, text: str | None = None) -> str | None:
        """Why this server cannot store a valid event, or None; `text` is its input line, which
        lets most events be passed without a look. Only nx-27017 refuses such values."""
        return NX27017_QUIRKS.unstorable(event, text) if self.is_nx27017 else None

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()


def check_db_name(name: str) -> str:
    """MongoDB's database-name rules, checked before a server ever sees the name."""
    if not _DB_NAME.match(name):
        raise InvalidInput(
            f"invalid database name {name[:70]!r}: 1 to 63 characters, "
            'none of / \\ . " $ * < > : | ?'
            " or spaces"
        )
    return name


def connect(settings: Settings, notice: Callable[[str], None]) -> Store:
    """Open the configured store (or the embedded dev store), saying on stderr which one it is."""
    check_db_name(settings.db)
    embedded = settings.uri is None
    if embedded:
        from evstream.embedded import DevStore

        dev = DevStore(settings.data_home)
        record, started = dev.ensure_running()
        uri = record.uri
        description = f"embedded dev store at 127.0.0.1:{record.port} (data in {record.data_dir})"
        notice(f"{'started' if started else 'using'} the {description}")
    else:
        assert settings.uri is not None
        uri = settings.uri
        description = f"MongoDB at {mask_uri(uri)}"
    timeout = int(os.environ.get("EVSTREAM_TIMEOUT_MS", DEFAULT_TIMEOUT_MS))
    with translate_errors(uri):
        given = check_uri(uri)
        # Short timeouts so an unreachable server fails in seconds, unless the URI sets its own.
        defaults = {
            "serverSelectionTimeoutMS": timeout,
            "connectTimeoutMS": timeout,
            "appname": "evstream",
        }
        client: MongoClient[dict[str, Any]] = MongoClient(
            uri,
            tz_aware=True,
            tzinfo=timezone.utc,
            **{k: v for k, v in defaults.items() if k.lower() not in given},
        )
    store = Store(client, client[settings.db], uri, embedded, description)
    if not embedded:
        notice(f"using {description}, database {settings.db}")
    return store


def check_uri(uri: str) -> set[str]:
    """Refuse a malformed URI or bad option value (pymongo only warns); the options it sets."""
    if uri.startswith("mongodb+srv://"):
        # Parsing one means a DNS lookup; MongoClient reports those failures itself.
        query = uri.partition("?")[2]
        return {part.split("=", 1)[0].lower() for part in query.split("&") if part}
    try:
        parsed = uri_parser.parse_uri(uri, warn=False)
    except ValueError as exc:
        raise InvalidInput(f"invalid MongoDB URI: {scrub(str(exc), uri)}") from None
    return {name.lower() for name in parsed["options"]}


@contextlib.contextmanager
def translate_errors(uri: str | None = None) -> Iterator[None]:
    """Turn pymongo's exceptions into evstream errors with one clear, password-free line."""
    try:
        yield
    except EvstreamError:
        raise
    except InvalidURI as exc:
        raise InvalidInput(f"invalid MongoDB URI: {scrub(str(exc), uri)}") from None
    except ConfigurationError as exc:
        raise InvalidInput(f"invalid MongoDB URI or option: {scrub(str(exc), uri)}") from None
    except InvalidName as exc:
        raise InvalidInput(scrub(str(exc), uri)) from None
    except ServerSelectionTimeoutError as exc:
        where = mask_uri(uri) if uri else "the server"
        reason = scrub(driver_message(exc, 300), uri)
        raise ServerUnreachable(f"cannot reach {where}: {reason}") from None
    except ConnectionFailure as exc:
        reason = scrub(driver_message(exc, 300), uri)
        raise ServerUnreachable(f"lost the connection to the server: {reason}") from None
    except OperationFailure as exc:
        if exc.code in AUTH_ERROR_CODES:
            raise ServerUnreachable(
                f"authentication failed: {scrub(_server_message(exc), uri)}",
                hint="check the user name, password and authSource in the URI",
            ) from None
        if exc.code in NO_CHANGE_STREAMS_CODES:
            raise FeatureUnsupported(scrub(str(exc), uri)) from None
        raise EvstreamError(f"the server refused: {scrub(str(exc), uri)[:300]}") from None
    except KeyError as exc:
        if not NX27017_QUIRKS.no_authentication(exc):
            raise
        raise ServerUnreachable(
            "authentication failed: the server does not support authentication (nx-27017)",
            hint="remove the user name and password from the URI",
        ) from None


def driver_message(exc: BaseException, limit: int = 200) -> str:
    """pymongo's message without the timeout settings and topology dump it appends."""
    text = str(exc)
    for cut in (", Timeout:", " (configured timeouts", ", Topology Description:"):
        text = text.split(cut)[0]
    return text[:limit]


def _server_message(exc: OperationFailure) -> str:
    details = exc.details or {}
    return str(details.get("errmsg") or exc)


# --- the event log -----------------------------------------------------------------------------

STREAM_VERSION_INDEX = "stream_1_version_1"


def ensure_indexes(store: Store) -> None:
    """Create the log's indexes if they are missing (idempotent)."""
    store.events.create_index(
        [("stream", pymongo.ASCENDING), ("version", pymongo.ASCENDING)],
        name=STREAM_VERSION_INDEX,
        unique=True,
    )
    store.events.create_index([("ts", pymongo.ASCENDING)], name="ts_1")


def now_utc() -> datetime:
    """The current time at BSON's millisecond precision, so printed and stored agree."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def build_document(event: EventInput, version: int, ts: datetime) -> dict[str, Any]:
    """The stored form of an event (DESIGN.md's `events` table)."""
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
    return doc


def check_size(doc: dict[str, Any], line: int | None = None) -> None:
    """Refuse a document over MongoDB's 16 MB limit before anything is sent."""
    size = len(bson_encode(doc))
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidEvent(
            f"event is {size / 1024 / 1024:.1f} MB; MongoDB stores documents up to 16 MB",
            line=line,
        )


DUPLICATE_KEY = 11000


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
    """The stream's current version (0 for a stream with no events)."""
    doc = store.events.find_one(
        {"stream": stream},
        sort=[("version", pymongo.DESCENDING)],
        projection={"version": 1, "_id": 0},
    )
    return int(doc["version"]) if doc else 0


def stream_heads(store: Store, streams: Iterable[str]) -> dict[str, int]:
    """The current version of each stream, in one round trip; absent streams are at 0."""
    wanted = list(streams)
    if not wanted:
        return {}
    if store.is_nx27017:
        pipeline = NX27017_QUIRKS.heads_pipeline(wanted)
    else:
        # $sort then $group/$first lets MongoDB answer from the {stream, version} index
        # (a DISTINCT_SCAN), without reading every event of the streams.
        pipeline = [
            {"$match": {"stream": {"$in": wanted}}},
            {"$sort": {"stream": 1, "version": -1}},
            {"$group": {"_id": "$stream", "version": {"$first": "$version"}}},
        ]
    heads = dict.fromkeys(wanted, 0)
    for row in store.events.aggregate(pipeline):
        heads[row["_id"]] = int(row["version"])
    return heads


class NX27017_QUIRKS:  # noqa: N801 - named after the server whose quirks it holds
    """Workarounds for nx-27017 (shared/STORES.md), kept in one place."""

    @staticmethod
    def no_authentication(exc: KeyError) -> bool:
        """nx-27017 has no authentication: it answers saslStart like any unknown command, {ok: 1}
        without a payload, and pymongo's SCRAM code fails on that with KeyError('payload')."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = tb.tb_frame.f_code.co_filename if tb is not None else ""
        return exc.args == ("payload",) and "pymongo" in where and where.endswith("auth.py")

    # Input text without these cannot hold a value nx-27017 refuses: NaN and Infinity are JSON
    # literals to Python's parser, the bson types come from Extended JSON ({"$numberDecimal": …}).
    UNSTORABLE_HINTS = ('"$', "NaN", "Infinity")
    UNSTORABLE_TYPES = {
        Decimal128: "a Decimal128",
        Regex: "a regular expression",
        Timestamp: "a Timestamp",
        MinKey: "MinKey",
        MaxKey: "MaxKey",
    }

    @classmethod
    def unstorable(cls, event: EventInput, text: str | None = None) -> str | None:
        """nx-27017 keeps documents as JSON: it refuses NaN and ±Infinity, Decimal128, regular
        expressions, Timestamps and MinKey/MaxKey (MongoDB stores them all), failing the insert
        with code 8. Found before writing, such an event is a bad input line like any other."""
        if text is not None and not any(hint in text for hint in cls.UNSTORABLE_HINTS):
            return None
        for where, value in (("data", event.data), ("meta", event.meta)):
            found = cls._unstorable_in(value, where)
            if found:
                return f"{found}, which nx-27017 (the embedded dev store) cannot store"
        return None

    @classmethod
    def _unstorable_in(cls, value: Any, where: str) -> str | None:
        if isinstance(value, dict):
            items: Iterable[tuple[Any, Any]] = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{where} is {value!r}"
        else:
            kind = cls.UNSTORABLE_TYPES.get(type(value))
            return f"{where} is {kind}" if kind else None
        for key, item in items:
            found = cls._unstorable_in(item, f"{where}.{key}")
            if found:
                return found
        return None

    @staticmethod
    def heads_pipeline(streams: list[str]) -> list[dict[str, Any]]:
        """nx-27017 runs $sort+$group/$first in Python (~1 s per 1,000 streams); $max is SQL."""
        return [
            {"$match": {"stream": {"$in": streams}}},
            {"$group": {"_id": "$stream", "version": {"$max": "$version"}}},
        ]

    @staticmethod
    def count_matching(collection: Collection[dict[str, Any]], query: dict[str, Any]) -> int:
        """count_documents runs in Python on nx-27017 (~35,000 documents/s); `count` is SQL.

        nx-27017's `find` and `count` also compare dates at whole seconds (count_documents is
        exact), so `count` agrees with `find` on a date range there, which callers may rely on.
        """
        reply = collection.database.command("count", collection.name, query=query)
        return int(reply["n"])

    @staticmethod
    def bucket_counts(
        collection: Collection[dict[str, Any]], path: str, edges: list[datetime]
    ) -> list[int]:
        """Documents per date range [edges[i], edges[i+1]).

        nx-27017 answers `$bucket` on dates with no buckets at all, has no date arithmetic,
        compares dates wrongly in an aggregation's `$match` (`$gte` always true, `$lt` always
        false), and a range count per bucket is a full scan each: group the whole collection by
        the exact date in one pass (its `$group` keys come back as `{"$date": …}` strings) and
        bucket the groups here.
        """
        from bisect import bisect_right

        from bson import json_util

        counts = [0] * (len(edges) - 1)
        for row in collection.aggregate([{"$group": {"_id": f"${path}", "n": {"$sum": 1}}}]):
            key = row["_id"]
            if isinstance(key, str):
                key = json_util.loads(key)
            if not isinstance(key, datetime):
                continue
            if key.tzinfo is None:
                key = key.replace(tzinfo=timezone.utc)
            at = bisect_right(edges, key) - 1
            if 0 <= at < len(counts):
                counts[at] += int(row["n"])
        return counts


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
        head = stream_head(store, event.stream)
        if event.expected_version is not None and head != event.expected_version:
            raise conflict(event, head)
        doc = build_document(event, head + 1, now_utc())
        check_size(doc)
        try:
            events.insert_one(doc)
            return AppendResult(doc, False)
        except DuplicateKeyError as exc:
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


def conflict(event: EventInput, actual: int) -> ConcurrencyConflict:
    """The error for a failed expected-version check."""
    where = f"line {event.line}: " if event.line is not None else ""
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
        """Store a batch; raises ConcurrencyConflict at the first failed expected version."""
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
        for i, event in enumerate(pending):
            head = self.heads[event.stream]
            if event.expected_version is not None and event.expected_version != head:
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
        try:
            self.store.events.insert_many(docs, ordered=True)
            return len(docs), None
        except BulkWriteError as exc:
            errors = (exc.details or {}).get("writeErrors") or []
            if not errors:
                raise
            return int(errors[0]["index"]), errors[0]


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
