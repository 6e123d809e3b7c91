"""The MongoDB adapter: the connection, the collections, and every query shape that a server
could answer differently (docs/storage.md).

`MongoStore` is written to MongoDB's documentation. A server that needs workarounds gets a
subclass that overrides these methods (`evstream.storage.nx27017`), chosen once at connect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from bson import Timestamp
from pymongo import MongoClient
from pymongo.change_stream import CollectionChangeStream
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure
from pymongo.monitoring import ConnectionClosedReason, ConnectionPoolListener
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference

from evstream.events import EventInput
from evstream.fieldmap import DEFAULT, FieldMap
from evstream.storage.overview import OverviewQueries

EVENTS = "events"
SESSIONS = "sessions"
CHECKPOINTS = "evstream_checkpoints"
# Collections evstream owns besides `events` and `sessions` start with this prefix.
OWN_PREFIX = "evstream_"

Doc = dict[str, Any]
# How long a change stream's getMore may wait for changes on a server that honours it.
WATCH_AWAIT_MS = 500


class ConnectionLosses(ConnectionPoolListener):
    """The client's lost connections, counted: a pool cleared after a network error, or a pooled
    connection found closed by the server. A change stream that pymongo resumed (or found ended)
    by itself across a lost connection saw one of these first (docs/storage.md, "Lost
    connections"). Registered when the client is created; nothing here runs per operation
    beyond pymongo's own event dispatch."""

    def __init__(self) -> None:
        self.count = 0  # only ever compared for a change: a racing increment still changes it

    def pool_cleared(self, event: Any) -> None:
        self.count += 1

    def connection_closed(self, event: Any) -> None:
        if event.reason == ConnectionClosedReason.ERROR:
            self.count += 1

    def pool_created(self, event: Any) -> None:
        pass

    def pool_ready(self, event: Any) -> None:
        pass

    def pool_closed(self, event: Any) -> None:
        pass

    def connection_created(self, event: Any) -> None:
        pass

    def connection_ready(self, event: Any) -> None:
        pass

    def connection_check_out_started(self, event: Any) -> None:
        pass

    def connection_check_out_failed(self, event: Any) -> None:
        pass

    def connection_checked_out(self, event: Any) -> None:
        pass

    def connection_checked_in(self, event: Any) -> None:
        pass


@dataclass
class MongoStore(OverviewQueries):
    """An open connection to a MongoDB deployment and the database evstream works in.

    Every read goes to the primary, whatever read preference the URI asks for: stream heads,
    expected versions, the watch handover and checkpoints must see the latest writes
    (docs/storage.md, "Reads").
    """

    client: MongoClient[Doc]
    db: Database[Doc]
    uri: str
    embedded: bool
    description: str
    version: str | None = None
    timeout_s: float = 30.0  # how long an election or a restart is ridden out
    indexes_checked: bool = field(default=False, repr=False)
    losses: ConnectionLosses | None = field(default=None, repr=False)  # the client's listener
    # Where the log keeps each field (docs/adopting.md): queries use its paths, and reads turn
    # stored documents into canonical events where it is not evstream's own shape.
    fieldmap: FieldMap = field(default=DEFAULT, repr=False)

    product: ClassVar[str] = "MongoDB"
    # Whether a change stream that pymongo resumed by itself across a lost connection (a server
    # restart, a failover) still has every change: on MongoDB it has, the oplog outlives both.
    driver_resume_is_exact: ClassVar[bool] = True
    # Whether a find's projection makes a read cheaper (less to send and decode): long reads of
    # a few fields (`evstream check`) ask for those fields only where it does.
    cheap_projection: ClassVar[bool] = True

    @classmethod
    def open(
        cls,
        client: MongoClient[Doc],
        db_name: str,
        uri: str,
        *,
        embedded: bool,
        description: str,
        version: str | None = None,
        timeout_s: float = 30.0,
        losses: ConnectionLosses | None = None,
        fieldmap: FieldMap = DEFAULT,
    ) -> MongoStore:
        """The store for `db_name`, with reads pinned to the primary."""
        db = client.get_database(db_name, read_preference=ReadPreference.PRIMARY)
        return cls(
            client,
            db,
            uri,
            embedded,
            description,
            version,
            timeout_s,
            losses=losses,
            fieldmap=fieldmap,
        )

    @property
    def events(self) -> Collection[Doc]:
        """The event log (the map's collection)."""
        return self.db[self.fieldmap.collection]

    @property
    def log_name(self) -> str:
        """The event log's collection name."""
        return self.fieldmap.collection

    def canonical(self, doc: Doc) -> Doc:
        """A stored document of the log as a canonical event (itself in evstream's own shape)."""
        fm = self.fieldmap
        return fm.canonical(doc) if fm.shaped else doc

    def canonical_all(self, docs: Iterable[Doc]) -> Iterable[Doc]:
        """Stored documents of the log as canonical events, lazily (the same documents in
        evstream's own shape: nothing is added per document)."""
        fm = self.fieldmap
        if not fm.shaped:
            return docs
        return map(fm.convert, docs)

    def ids_matching(self, collection: str, path: str, values: list[Any]) -> list[Any]:
        """The `_id`s of the documents of `collection` whose `path` holds one of `values` (event
        ids an erase looks for in evstream's own collections)."""
        if not values:
            return []
        found = self.db[collection].find({path: {"$in": values}}, {"_id": 1})
        return [d["_id"] for d in found]

    def read_events(self, find: Callable[[Doc | None], Iterable[Doc]]) -> Iterable[Doc]:
        """Whole events of the log as canonical events: `find(fields)` opens the cursor with a
        projection (None: whole documents). On a mapped log the server names the fields where
        it cheaply can (`FieldMap.canonical_fields`: MongoDB 4.4+, not nx-27017, whose
        projections cost more than the translation saves); else each is translated here."""
        fields = self.fieldmap.canonical_fields() if self.renames_in_find else None
        if fields is not None:
            return find(fields)
        return self.canonical_all(find(None))

    @property
    def renames_in_find(self) -> bool:
        """Whether a find's projection may compute fields (`{"stream": "$aggregateId"}`),
        cheaply: MongoDB 4.4 and later."""
        if not self.cheap_projection:
            return False
        try:
            major, minor = (int(part) for part in (self.version or "").split(".")[:2])
        except ValueError:
            return False
        return (major, minor) >= (4, 4)

    def path(self, name: str) -> str:
        """Where the log stores a canonical field (`stream` → `aggregateId`)."""
        return self.fieldmap.paths()[name]

    def collection(self, name: str) -> Collection[Doc]:
        """Any collection of the database."""
        return self.db[name]

    def majority(self, name: str) -> Collection[Doc]:
        """A collection read with majority read concern: what a change stream would also show."""
        return self.db.get_collection(name, read_concern=ReadConcern("majority"))

    @property
    def server_version(self) -> str | None:
        """The server's version, as buildInfo gave it at connect."""
        return self.version

    def quickly(self, seconds: float = 2.0) -> Any:
        """A block whose operations give up after `seconds` in all (pymongo's client-side
        timeout): for best-effort writes on the way out, which must not wait out an outage."""
        import pymongo

        return pymongo.timeout(seconds)

    def close(self) -> None:
        """Close the client's connections, and let the process exit without waiting for them.

        pymongo's exit handler joins its monitor threads, which sit in an awaited `hello` for
        up to half a second after `close()`. With the client closed nothing is left for them to
        do, and they are daemon threads: the handler is dropped so a one-event `publish` ends
        as soon as its work is done (docs/storage.md, "Closing").
        """
        self.client.close()
        _skip_pymongo_exit_wait()

    def abandon(self) -> None:
        """Leave the client open to the process's exit (Ctrl-C), without its exit handler:
        that joins pymongo's threads, which in an outage sit in server selection (a cursor
        to kill), for seconds. The operating system closes the sockets."""
        _skip_pymongo_exit_wait()

    # --- query shapes a server may answer differently ---------------------------------------

    def unstorable(self, event: EventInput, text: str | None = None) -> str | None:
        """Why this server cannot store a valid event, or None. MongoDB stores every BSON value."""
        return None

    def not_events_cursor(self, query: Doc, fields: Doc) -> Iterable[Doc]:
        """Documents matching `query` that may not be events: a superset of those
        `event_problem` names (its caller checks each), in (stream, version) order. The server
        picks them out; the match cannot use an index, so it scans the log server-side."""
        from evstream.storage.overview import not_event_query

        return (
            self.events.find({**query, **not_event_query(self.fieldmap)}, fields)
            .sort(self.stream_sort())
            .batch_size(1000)
        )

    def stream_sort(self) -> list[tuple[str, int]]:
        """A stream's order as a sort on the map's paths: (stream, version), the unique
        index's order; on a log without versions (stream, ts, _id)."""
        fm = self.fieldmap
        if fm.version is not None:
            return [(fm.stream, 1), (fm.version, 1)]
        return [(fm.stream, 1), (fm.ts, 1), ("_id", 1)]

    def count(self, collection: Collection[Doc], query: Doc) -> int:
        """Documents matching `query`, compared as `find` compares them."""
        return int(collection.count_documents(query))

    def heads_pipeline(self, streams: list[str]) -> list[Doc]:
        """The aggregation that finds each stream's highest version.

        `$sort` in the exact reverse of the `{stream: 1, version: 1}` index's order, then
        `$group`/`$first`: MongoDB answers it with a DISTINCT_SCAN of the index (only the index
        order or its exact reverse qualifies), reading one entry per stream and sorting nothing.
        """
        stream, version = self.fieldmap.stream, self.fieldmap.version
        return [
            {"$match": {stream: {"$in": streams}}},
            {"$sort": {stream: -1, version: -1}},
            {"$group": {"_id": f"${stream}", "version": {"$first": f"${version}"}}},
        ]

    def bucket_counts(
        self, collection: Collection[Doc], path: str, edges: list[datetime]
    ) -> list[int]:
        """Documents per date range [edges[i], edges[i+1]), from one `$bucket` over the index."""
        counts = [0] * (len(edges) - 1)
        pipeline: list[Doc] = [
            {"$match": {path: {"$gte": edges[0], "$lt": edges[-1]}}},
            {"$bucket": {"groupBy": f"${path}", "boundaries": edges, "output": {"n": {"$sum": 1}}}},
        ]
        index = {_aware(edge): i for i, edge in enumerate(edges)}
        for row in collection.aggregate(pipeline):
            at = index.get(_aware(row["_id"])) if isinstance(row["_id"], datetime) else None
            if at is not None and at < len(counts):
                counts[at] = int(row["n"])
        return counts

    # --- projections ------------------------------------------------------------------------

    def checkpoint_time(self, moment: datetime) -> datetime:
        """A time to keep in a projection checkpoint, which `find` and `count` later compare
        events' `ts` with exactly. MongoDB compares dates to the millisecond: any time will do."""
        return moment

    # --- watching ---------------------------------------------------------------------------
    # What `evstream.storage.changes` asks of the server for a watch (docs/handover.md).

    def watch_pipeline(self, match: Doc, keep_ops: Iterable[str]) -> list[Doc]:
        """The filters as a change stream's $match, letting drop/rename/invalidate through."""
        if not match:
            return []
        return [{"$match": {"$or": [match, {"operationType": {"$in": sorted(keep_ops)}}]}}]

    def open_changes(
        self, name: str, pipeline: list[Doc], resume_after: Any = None
    ) -> CollectionChangeStream[Doc]:
        """A change stream on a collection (on the primary, as every collection here is)."""
        kwargs: dict[str, Any] = {
            "full_document": "updateLookup",
            "max_await_time_ms": WATCH_AWAIT_MS,
            "batch_size": 1000,
        }
        if resume_after is not None:
            kwargs["resume_after"] = resume_after
        collection = self.collection(name)
        # Dates in UTC as the driver decodes them (bson's utc), not converted to
        # datetime.timezone.utc one by one: the same instants, and a change decodes faster.
        codec = collection.codec_options.with_options(tzinfo=None)
        return collection.with_options(codec_options=codec).watch(pipeline, **kwargs)

    def change_document(self, change: Mapping[str, Any]) -> Doc | None:
        """A change's full document, as stored."""
        doc = change.get("fullDocument")
        return doc if isinstance(doc, dict) else None

    def change_key(self, change: Mapping[str, Any], doc: Doc | None) -> Doc:
        """A change's document key: on a sharded collection the shard key's fields, then _id."""
        return dict(change.get("documentKey") or {})

    def change_time(self, change: Mapping[str, Any]) -> Timestamp | None:
        """When a change was committed, in the cluster's time (its oplog entry's Timestamp)."""
        at = change.get("clusterTime")
        return at if isinstance(at, Timestamp) else None

    def token_time(self, token: Any) -> Timestamp | None:
        """The cluster time a resume token stands for (after an empty batch, the post-batch
        resume token: how far the server has looked). MongoDB's token `_data` is hex whose
        first byte 0x82 tags the Timestamp's 8 bytes (seconds, increment); None otherwise."""
        data = token.get("_data") if isinstance(token, Mapping) else None
        if not isinstance(data, str) or len(data) < 18 or data[:2] != "82":
            return None
        try:
            return Timestamp(int(data[2:10], 16), int(data[10:18], 16))
        except ValueError:
            return None

    def handover_log(self) -> Collection[Doc]:
        """The log as the handover reads it: majority read concern, as the change stream
        reads (docs/handover.md, "Reads")."""
        return self.majority(self.fieldmap.collection)

    def log_session(self) -> ClientSession | None:
        """A session for the handover's log read, whose operation time tells where it ended."""
        return self.client.start_session(causal_consistency=False)

    def operation_time(self, session: ClientSession | None) -> Timestamp | None:
        """The cluster time of the last reply in a session (None without one)."""
        if session is None:
            return None
        at = session.operation_time
        return at if isinstance(at, Timestamp) else None

    def ts_since(self, lower: datetime) -> Doc:
        """A `ts` condition matching everything at or after `lower` (as the log stores ts)."""
        return {"$gte": self.fieldmap.ts_value(lower)}

    def ts_before(self, upper: datetime) -> Doc:
        """A `ts` condition matching only dates before `upper`."""
        return {"$lt": upper}

    def ts_range(self, op: str, moment: datetime) -> Doc:
        """A condition on the log's ts (`$gte`, `$gt`, `$lt` …) with `moment` as the log stores
        ts (a date, or epoch ms / s)."""
        return {op: self.fieldmap.ts_value(moment)}

    def collection_gone(self, name: str) -> bool:
        """Whether a watched collection was dropped without an event: never on MongoDB, whose
        change streams report drop, rename and invalidate."""
        return False

    def database_exists(self) -> bool:
        """Whether the database has any collection yet."""
        return bool(self.db.list_collection_names())

    def collection_exists(self, name: str) -> bool:
        """Whether the collection exists yet."""
        return name in self.db.list_collection_names(filter={"name": name})

    def document_key_fields(self, name: str) -> tuple[str, ...]:
        """The fields of this collection's documentKey: its shard key's, then _id.

        A sharded collection's shard key is in `config.collections` (through mongos); where
        that cannot be read (no privilege, not sharded) the key is `_id` alone.
        """
        try:
            config = self.client.get_database("config", read_preference=ReadPreference.PRIMARY)
            info = config["collections"].find_one({"_id": f"{self.db.name}.{name}"}, {"key": 1})
        except OperationFailure:
            info = None
        key = (info or {}).get("key") or {}
        return (*[field for field in key if field != "_id"], "_id")

    def count_log_after(
        self, query: Doc, ts: datetime | None, ident: Any, *, inclusive: bool
    ) -> int:
        """How many log events matching `query` come after (ts, ident) in log order (with
        `inclusive`, at or after ts): the ts index answers it."""
        if ts is None:
            return int(self.events.count_documents(query))
        path, stored = self.fieldmap.ts, self.fieldmap.ts_value(ts)
        if inclusive:
            query[path] = {"$gte": stored}
        else:
            raw = ident[-1] if isinstance(ident, list) else ident
            query["$or"] = [{path: {"$gt": stored}}, {path: stored, "_id": {"$gt": raw}}]
        return int(self.events.count_documents(query))

    def log_size(self) -> int:
        """The log's document count from collection metadata (non-events included): no scan."""
        return int(self.events.estimated_document_count())

    def count_log_after_capped(
        self, query: Doc, ts: datetime, ident: Any, cap: int, *, size: int | None = None
    ) -> int | None:
        """count_log_after, counting at most `cap` (the ts index walks that many keys at
        most); None where even that would scan the log (`size`: the log's, if known)."""
        path, stored = self.fieldmap.ts, self.fieldmap.ts_value(ts)
        if ident is None:
            query[path] = {"$gt": stored}
        else:
            raw = ident[-1] if isinstance(ident, list) else ident
            query["$or"] = [{path: {"$gt": stored}}, {path: stored, "_id": {"$gt": raw}}]
        return int(self.events.count_documents(query, limit=cap))

    def inserted_since(self, marker: Any, limit: int) -> tuple[list[Doc], Any, bool]:
        """The log's documents inserted after the one whose _id is `marker`, newest first; the
        newest one's _id (the next marker); whether `marker` was reached within `limit`.

        Natural order is insertion order on a standalone mongod (WiredTiger never reuses a
        record id), so reading it backwards until the marker costs what was inserted since.
        """
        docs: list[Doc] = []
        reached = marker is None
        newest = marker
        cursor = self.events.find({}).sort("$natural", -1).limit(1 if marker is None else limit)
        with cursor:
            for n, doc in enumerate(cursor):
                if n == 0:
                    newest = doc.get("_id")
                if marker is not None and doc.get("_id") == marker:
                    reached = True
                    break
                if marker is not None:
                    docs.append(doc)
        return docs, newest, reached


def _skip_pymongo_exit_wait() -> None:
    import atexit

    try:
        from pymongo.synchronous import monitor
    except ImportError:  # pymongo before 4.9 keeps it in pymongo.monitor
        from pymongo import monitor  # type: ignore[no-redef]
    handler = getattr(monitor, "_shutdown_resources", None)
    if handler is not None:
        atexit.unregister(handler)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
