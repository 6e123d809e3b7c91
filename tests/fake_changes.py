"""A stricter stand-in for a MongoDB change stream, for unit tests of watch.

mongomock has no change streams and nx-27017's differ from MongoDB's (STORES in docs/storage.md,
"nx-27017"). This fake behaves as MongoDB documents it: events with a Timestamp `clusterTime`,
a `wallTime`, `ns`, a `documentKey` with the shard key (`{stream, _id}` for the log), resume
tokens whose `_data` is hex starting with the Timestamp; a post-batch resume token after each
batch; getMores that are slow, or empty while a backlog exists (mongos waiting on an idle
shard); and server errors with their codes and labels on cue.

`FakeCluster` is the deployment: a mongomock database plus an oplog. `FakeStore` is a real
`MongoStore` over it whose `open_changes` hands out `FakeChangeStream`s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import mongomock
from bson import Timestamp
from pymongo.errors import OperationFailure

from evstream.storage import MongoStore
from evstream.storage.mongo import ConnectionLosses

UTC = timezone.utc


def token(at: Timestamp, n: int = 0) -> dict[str, str]:
    """A resume token shaped like MongoDB's: hex, 0x82 then the Timestamp, then more."""
    return {"_data": f"82{at.time:08X}{at.inc:08X}2B022C0100296E5A1004{n:016X}04"}


def server_error(code: int, *labels: str) -> OperationFailure:
    names = {286: "ChangeStreamHistoryLost", 136: "CappedPositionLost", 13: "Unauthorized",
             85: "IndexOptionsConflict", 280: "ChangeStreamFatalError", 260: "InvalidResumeToken",
             91: "ShutdownInProgress", 40573: "Location40573"}  # fmt: skip
    details = {"ok": 0, "code": code, "codeName": names.get(code, "Error"),
               "errmsg": f"{names.get(code, 'error')} (fake)"}  # fmt: skip
    if labels:
        details["errorLabels"] = list(labels)
    return OperationFailure(details["errmsg"], code=code, details=details)


class MergedCursor:
    """What mongos answers for a find on a sharded collection: every shard's, merged."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def sort(self, field: str, direction: int) -> MergedCursor:
        self.docs.sort(key=lambda d: d.get(field), reverse=direction < 0)
        return self

    def batch_size(self, n: int) -> MergedCursor:
        return self

    def __iter__(self) -> Any:
        return iter(self.docs)

    def __enter__(self) -> MergedCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class ShardedCollection:
    """A collection sharded over mongomock collections (each keeps _id unique alone)."""

    def __init__(self, shards: list[Any], shard_key: tuple[str, ...]) -> None:
        self.shards = shards
        self.shard_key = shard_key

    def shard_for(self, doc: dict[str, Any]) -> Any:
        key = "|".join(str(doc.get(field)) for field in self.shard_key)
        return self.shards[ord(key[:1] or "?") % len(self.shards)]  # alice, bob, carol: 1, 2, 0

    def insert_one(self, doc: dict[str, Any]) -> None:
        self.shard_for(doc).insert_one(doc)

    def find(self, query: Any = None, projection: Any = None, **kwargs: Any) -> MergedCursor:
        docs: list[dict[str, Any]] = []
        for shard in self.shards:
            docs.extend(shard.find(query, projection))
        return MergedCursor(docs)

    def count_documents(self, query: Any) -> int:
        return sum(shard.count_documents(query) for shard in self.shards)


class FakeCluster:
    """A database and its oplog: every write through `insert` gets the next cluster time."""

    def __init__(self, db_name: str = "evstream", shard_key: tuple[str, ...] = ()) -> None:
        self.client: Any = mongomock.MongoClient(tz_aware=True)
        self.db = self.client[db_name]
        self.shard_key = shard_key
        self.oplog: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.seconds = 1_700_000_000
        # The client's pool listener, as evstream registers it: a "resumed" step counts a loss.
        self.losses = ConnectionLosses()
        self.sharded: ShardedCollection | None = None
        if shard_key:
            shards = [self.client[f"{db_name}_shard{i}"]["events"] for i in range(3)]
            self.sharded = ShardedCollection(shards, shard_key)

    def collection(self, name: str) -> Any:
        """Where a write to this collection goes."""
        if name == "events" and self.sharded is not None:
            return self.sharded
        return self.db[name]

    def now(self) -> Timestamp:
        """The cluster time of the newest write (what a read's operationTime says)."""
        with self.lock:
            return self.oplog[-1]["clusterTime"] if self.oplog else Timestamp(self.seconds, 0)

    def insert(self, name: str, docs: list[dict[str, Any]]) -> None:
        """Insert documents, one oplog entry each, as MongoDB does for an insert_many."""
        with self.lock:
            for doc in docs:
                self.collection(name).insert_one(dict(doc))
                at = Timestamp(self.seconds, len(self.oplog) + 1)
                key = {field: doc.get(field) for field in self.shard_key}
                key["_id"] = doc["_id"]
                self.oplog.append(
                    {
                        "_id": token(at, len(self.oplog)),
                        "operationType": "insert",
                        "clusterTime": at,
                        "wallTime": datetime.now(UTC),
                        "fullDocument": dict(doc),
                        "ns": {"db": self.db.name, "coll": name},
                        "documentKey": key,
                    }
                )


class FakeChangeStream:
    """A change stream as pymongo's looks to evstream: try_next, resume_token, close.

    `plan` says what each getMore does, in turn (then "normal"):
    - "normal": the next batch of the backlog, or an empty batch when there is none;
    - ("slow", seconds): the same, answered after that long;
    - ("empty", None): an empty batch although a backlog exists; its post-batch token is where
      the stream got to, behind the backlog;
    - ("do", fn): call fn() (a write landing now), then as "normal";
    - ("resumed", docs): the connection was lost and pymongo resumed the stream by itself from
      its token: the client's pool listener counts a lost connection, `docs` land in `events`
      unrecorded (nx-27017 records no changes while no stream is open), then as "normal";
    - ("ended", None): the server answers with an exhausted cursor (nx-27017 after a restart,
      to the old cursor's getMore): None, and the stream is no longer alive;
    - an exception: raised, as the server's error.
    """

    def __init__(self, cluster: FakeCluster, name: str, plan: list[Any], batch_size: int) -> None:
        self.cluster = cluster
        self.name = name
        self.plan = list(plan)
        self.batch_size = batch_size
        self.at = len(cluster.oplog)  # opened now: changes committed from here on
        self.buffer: list[dict[str, Any]] = []
        self.resume_token: Any = token(cluster.now())
        self.getmores = 0
        self.closed = False
        self.alive = True

    def _backlog(self) -> list[dict[str, Any]]:
        with self.cluster.lock:
            entries = self.cluster.oplog[self.at :]
        return [e for e in entries if e["ns"]["coll"] == self.name]

    def try_next(self) -> Any:
        if self.buffer:
            change = self.buffer.pop(0)
            self.resume_token = change["_id"]
            return change
        self.getmores += 1
        step = self.plan.pop(0) if self.plan else "normal"
        if isinstance(step, Exception):
            raise step
        if isinstance(step, tuple) and step[0] == "do":
            step[1]()
        if isinstance(step, tuple) and step[0] == "resumed":
            self.cluster.losses.pool_cleared(None)
            for doc in step[1]:
                self.cluster.collection("events").insert_one(dict(doc))
        if isinstance(step, tuple) and step[0] == "ended" or not self.alive:
            self.alive = False
            return None
        if isinstance(step, tuple) and step[0] == "slow":
            threading.Event().wait(step[1])  # a slow link: the reply takes this long
        if isinstance(step, tuple) and step[0] == "empty":
            with self.cluster.lock:
                behind = self.cluster.oplog[self.at - 1]["clusterTime"] if self.at else None
            self.resume_token = token(behind or Timestamp(self.cluster.seconds, 0))
            return None
        with self.cluster.lock:
            entries = self.cluster.oplog[self.at : self.at + self.batch_size]
            self.at += len(entries)
            scanned = self.cluster.oplog[self.at - 1]["clusterTime"] if self.at else None
        batch = [dict(e) for e in entries if e["ns"]["coll"] == self.name]
        if not batch:
            self.resume_token = token(scanned or Timestamp(self.cluster.seconds, 0))
            return None
        self.buffer = batch
        return self.try_next()

    @property
    def _cursor(self) -> FakeChangeStream:
        """pymongo's ChangeStream asks its cursor whether a batch still holds changes
        (`_has_next`); evstream asks the same to hand a batch over at once."""
        return self

    def _has_next(self) -> bool:
        return bool(self.buffer)

    def close(self) -> None:
        self.closed = True
        self.alive = False

    def __enter__(self) -> FakeChangeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeStore(MongoStore):
    """A MongoStore over a FakeCluster: the real adapter's code, with the fake's streams.

    `script` lists what each `open_changes` does: an exception to raise, a plan for the
    stream (a list, see FakeChangeStream), or a ready stream object; `on_open` runs right
    after a stream opens (to commit what lands during the log read).
    """

    def __init__(
        self,
        cluster: FakeCluster | None = None,
        script: list[Any] | None = None,
        *,
        batch_size: int = 1000,
        on_open: Callable[[int], None] | None = None,
    ) -> None:
        self.cluster = cluster or FakeCluster()
        super().__init__(self.cluster.client, self.cluster.db, "mongodb://fake", False, "fake",
                         losses=self.cluster.losses)  # fmt: skip
        self.script = script if script is not None else []
        self.batch_size = batch_size
        self.on_open = on_open
        self.opened: list[Any] = []
        self.calls: list[dict[str, Any]] = []

    def open_changes(self, name: str, pipeline: list[Any], resume_after: Any = None) -> Any:
        self.calls.append({"pipeline": pipeline, "resume_after": resume_after})
        step = self.script.pop(0) if self.script else []
        if isinstance(step, Exception):
            raise step
        stream = (
            FakeChangeStream(self.cluster, name, step, self.batch_size)
            if isinstance(step, list)
            else step
        )
        self.opened.append(stream)
        if self.on_open is not None:
            self.on_open(len(self.opened))
        return stream

    @property
    def events(self) -> Any:
        return self.cluster.collection("events")

    def handover_log(self) -> Any:
        return self.cluster.collection("events")

    def log_session(self) -> Any:
        return None  # mongomock has no sessions; operation_time answers for the fake cluster

    def operation_time(self, session: Any) -> Timestamp | None:
        return self.cluster.now()

    def document_key_fields(self, name: str) -> tuple[str, ...]:
        if name == "events" and self.cluster.shard_key:
            return (*self.cluster.shard_key, "_id")
        return ("_id",)
