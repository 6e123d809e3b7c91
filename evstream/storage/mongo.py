"""The MongoDB adapter: the connection, the collections, and every query shape that a server
could answer differently (docs/storage.md).

`MongoStore` is written to MongoDB's documentation. A server that needs workarounds gets a
subclass that overrides these methods (`evstream.storage.nx27017`), chosen once at connect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference

from evstream.events import EventInput
from evstream.storage.overview import OverviewQueries

EVENTS = "events"
SESSIONS = "sessions"
CHECKPOINTS = "evstream_checkpoints"
# Collections evstream owns besides `events` and `sessions` start with this prefix.
OWN_PREFIX = "evstream_"

Doc = dict[str, Any]


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

    product: ClassVar[str] = "MongoDB"
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
    ) -> MongoStore:
        """The store for `db_name`, with reads pinned to the primary."""
        db = client.get_database(db_name, read_preference=ReadPreference.PRIMARY)
        return cls(client, db, uri, embedded, description, version, timeout_s)

    @property
    def events(self) -> Collection[Doc]:
        """The event log."""
        return self.db[EVENTS]

    def collection(self, name: str) -> Collection[Doc]:
        """Any collection of the database."""
        return self.db[name]

    def majority(self, name: str) -> Collection[Doc]:
        """A collection read with majority read concern: what a change stream would also show."""
        return self.db.get_collection(name, read_concern=ReadConcern("majority"))

    @property
    def is_nx27017(self) -> bool:
        """Transitional, for watching.py until its quirks move into the adapter."""
        return self.product == "nx-27017"

    @property
    def server_version(self) -> str | None:
        """The server's version, as buildInfo gave it at connect."""
        return self.version

    def close(self) -> None:
        """Close the client's connections, and let the process exit without waiting for them.

        pymongo's exit handler joins its monitor threads, which sit in an awaited `hello` for
        up to half a second after `close()`. With the client closed nothing is left for them to
        do, and they are daemon threads: the handler is dropped so a one-event `publish` ends
        as soon as its work is done (docs/storage.md, "Closing").
        """
        self.client.close()
        _skip_pymongo_exit_wait()

    # --- query shapes a server may answer differently ---------------------------------------

    def unstorable(self, event: EventInput, text: str | None = None) -> str | None:
        """Why this server cannot store a valid event, or None. MongoDB stores every BSON value."""
        return None

    def count(self, collection: Collection[Doc], query: Doc) -> int:
        """Documents matching `query`, compared as `find` compares them."""
        return int(collection.count_documents(query))

    def heads_pipeline(self, streams: list[str]) -> list[Doc]:
        """The aggregation that finds each stream's highest version.

        `$sort` in the exact reverse of the `{stream: 1, version: 1}` index's order, then
        `$group`/`$first`: MongoDB answers it with a DISTINCT_SCAN of the index (only the index
        order or its exact reverse qualifies), reading one entry per stream and sorting nothing.
        """
        return [
            {"$match": {"stream": {"$in": streams}}},
            {"$sort": {"stream": -1, "version": -1}},
            {"$group": {"_id": "$stream", "version": {"$first": "$version"}}},
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

    def index_named(self, name: str, indexes: Iterable[Doc]) -> Doc | None:
        """The index of this name among `listIndexes` rows."""
        return next((ix for ix in indexes if ix.get("name") == name), None)

    # --- projections ------------------------------------------------------------------------

    def checkpoint_time(self, moment: datetime) -> datetime:
        """A time to keep in a projection checkpoint, which `find` and `count` later compare
        events' `ts` with exactly. MongoDB compares dates to the millisecond: any time will do."""
        return moment


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
