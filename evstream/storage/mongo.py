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

EVENTS = "events"
SESSIONS = "sessions"
CHECKPOINTS = "evstream_checkpoints"
# Collections evstream owns besides `events` and `sessions` start with this prefix.
OWN_PREFIX = "evstream_"

Doc = dict[str, Any]


@dataclass
class MongoStore:
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
    indexes_checked: bool = field(default=False, repr=False)

    product: ClassVar[str] = "MongoDB"

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
    ) -> MongoStore:
        """The store for `db_name`, with reads pinned to the primary."""
        db = client.get_database(db_name, read_preference=ReadPreference.PRIMARY)
        return cls(client, db, uri, embedded, description, version)

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
        """Close the client's connections at once (no waiting for its monitor threads)."""
        self.client.close()

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


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
