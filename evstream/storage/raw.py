"""Raw pymongo doing evstream's work, the baselines `evstream bench` measures against
(docs/storage.md, "Layout"). Each does the same job as evstream with nothing of evstream's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import pymongo

from evstream.storage.mongo import EVENTS, Doc, MongoStore

# What a rebuild reads of each event.
FOLD_FIELDS = {"_id": 0, "stream": 1, "version": 1, "type": 1, "data": 1, "ts": 1}

# A change-stream loop printing each change's document as Extended JSON: the raw watcher.
WATCH_LOOP = r"""
import os, sys, time
import pymongo
from bson import json_util
uri, db, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
batch = int(sys.argv[4]) if len(sys.argv) > 4 else None
coll = pymongo.MongoClient(uri, tz_aware=True)[db]["events"]
out = sys.stdout
with coll.watch(full_document="updateLookup", batch_size=batch) as stream:
    sys.stderr.write("raw: ready\n"); sys.stderr.flush()
    n = 0
    for change in stream:
        out.write(json_util.dumps(change["fullDocument"]) + "\n")
        out.flush()
        n += 1
        if limit and n >= limit:
            break
"""

# The log read in ts order, each event printed as Extended JSON: the raw `watch --from start
# --no-follow` (`--no-follow` prints its lines as one output, flushed at the end).
READ_LOOP = r"""
import sys
import pymongo
from bson import json_util
uri, db = sys.argv[1], sys.argv[2]
database = pymongo.MongoClient(uri, tz_aware=True)[db]
database.command("ping")
out = sys.stdout
sys.stderr.write("raw: ready\n"); sys.stderr.flush()
for doc in database["events"].find().sort("ts", 1).batch_size(1000):
    out.write(json_util.dumps(doc) + "\n")
out.flush()
"""


def drop_database(store: MongoStore) -> None:
    """Drop the store's database (bench's scratch databases)."""
    store.client.drop_database(store.db.name)


def insert_batches(store: MongoStore, docs: list[Doc], size: int = 1000) -> None:
    """insert_many into the log in ordered batches of `size`: the raw publisher."""
    events = store.events
    for i in range(0, len(docs), size):
        events.insert_many(docs[i : i + size], ordered=True)


def count(store: MongoStore, name: str) -> int:
    """Documents in a collection."""
    return store.count(store.db[name], {})


def fold_limit(store: MongoStore, fold: Callable[[Iterable[Doc]], Doc], target: str) -> float:
    """Seconds for the floor of a full rebuild: one scan of the log sorted by (stream, version),
    the fold in memory, insert_many of the results into an empty collection."""
    db = store.db
    db.drop_collection(target)
    began = time.perf_counter()
    docs: list[Doc] = []
    stream, pending = None, []
    cursor = db[EVENTS].find({}, FOLD_FIELDS).sort([("stream", 1), ("version", 1)])
    for event in cursor.batch_size(2000):
        if event["stream"] != stream:
            if stream is not None:
                docs.append({"_id": stream, **fold(pending)})
            stream, pending = event["stream"], []
        pending.append(event)
    if stream is not None:
        docs.append({"_id": stream, **fold(pending)})
    for i in range(0, len(docs), 1000):
        db[target].insert_many(docs[i : i + 1000])
    seconds = time.perf_counter() - began
    db.drop_collection(target)
    return seconds


class RawLog:
    """A plain pymongo client on a database's log, for writers the bench times against."""

    def __init__(self, uri: str, db: str) -> None:
        self.client: pymongo.MongoClient[Doc] = pymongo.MongoClient(uri, tz_aware=True)
        self.events = self.client[db][EVENTS]

    def insert_one(self, doc: Doc) -> None:
        """Insert one event."""
        self.events.insert_one(doc)

    def insert_many(self, docs: list[Doc]) -> None:
        """Insert events, unordered."""
        self.events.insert_many(docs, ordered=False)

    def close(self) -> None:
        """Close the client."""
        self.client.close()

    def __enter__(self) -> RawLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# Whole programs for `bench --processes`: what a person would write instead of evstream.
# The loader: read NDJSON, number each stream's events, insert_many in batches of 1,000.
LOADER = r"""
import json, sys, uuid, datetime
import pymongo
uri, db, path = sys.argv[1], sys.argv[2], sys.argv[3]
coll = pymongo.MongoClient(uri, tz_aware=True)[db]["events"]
heads, batch = {}, []
now = datetime.datetime.now(datetime.timezone.utc)
with open(path, "rb") as lines:
    for line in lines:
        row = json.loads(line)
        heads[row["stream"]] = version = heads.get(row["stream"], 0) + 1
        batch.append({"_id": str(uuid.uuid4()), "stream": row["stream"], "version": version,
                      "type": row["type"], "data": row.get("data", {}), "ts": now})
        if len(batch) == 1000:
            coll.insert_many(batch, ordered=True)
            batch = []
if batch:
    coll.insert_many(batch, ordered=True)
"""

# The rebuild: scan the log in (stream, version) order, fold, insert_many into an empty
# collection; the fold is evstream's own (the same work, none of the guarantees).
REBUILDER = r"""
import sys
import pymongo
from evstream import sessions
uri, db = sys.argv[1], sys.argv[2]
database = pymongo.MongoClient(uri, tz_aware=True)[db]
database.drop_collection("raw_sessions")
fields = {"_id": 0, "stream": 1, "version": 1, "type": 1, "data": 1, "ts": 1}
docs, stream, pending = [], None, []
cursor = database.events.find({}, fields).sort([("stream", 1), ("version", 1)])
for event in cursor.batch_size(2000):
    if event["stream"] != stream:
        if stream is not None:
            docs.append({"_id": stream, **sessions.fold(pending)})
        stream, pending = event["stream"], []
    pending.append(event)
if stream is not None:
    docs.append({"_id": stream, **sessions.fold(pending)})
for i in range(0, len(docs), 1000):
    database.raw_sessions.insert_many(docs[i : i + 1000])
database.drop_collection("raw_sessions")
"""
