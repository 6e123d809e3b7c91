"""What archive, erase and redact read and write (docs/lifecycle.md).

The services (`evstream.archiving`, `evstream.erasing`, `evstream.redacting`) speak in events,
streams, runs and tombstones; the query shapes and the collections they live in are here.
Every function turns driver errors into evstream errors (`translate_errors`).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import queue
import secrets
import threading
import zlib
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import bson
from bson.codec_options import CodecOptions
from pymongo import DeleteMany, ReplaceOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from evstream.fieldmap import get_path
from evstream.storage.changes import CHECKPOINT_WINDOW
from evstream.storage.delivery import DEAD_LETTERS
from evstream.storage.errors import duplicates_only, translate_errors
from evstream.storage.mongo import CHECKPOINTS, EVENTS, OWN_PREFIX, SESSIONS, MongoStore
from evstream.storage.projections import PROJECTIONS

ARCHIVES = OWN_PREFIX + "archives"
TOMBSTONES = OWN_PREFIX + "tombstones"
# The per-database secret key of the tombstones' keyed hashes.
KEYS = OWN_PREFIX + "keys"
# What each archived stream's fold starts from: how far it was archived (`through`, its highest
# archived version) and each known projection's state of it at that edge (`snapshots`), stored
# a thousand streams to a document (`save_archived_chunk`).
ARCHIVED_STREAMS = OWN_PREFIX + "archived_streams"

READ_BATCH = 2000
DELETE_BATCH = 1000
# An archive deletes by _id in batches this large: one round trip (and, on a server that scans,
# one scan) per batch.
ARCHIVE_DELETE_BATCH = 10_000
# Archived streams' records are stored this many to a document (CHUNK_BYTES at most).
CHUNK_STREAMS = 1000
CHUNK_BYTES = 8 * 1024 * 1024

Doc = dict[str, Any]
CODEC: CodecOptions[Doc] = CodecOptions(tz_aware=True, tzinfo=timezone.utc)


# --- reading and rewriting the log ---------------------------------------------------------------


def log_query(
    store: MongoStore, stream: list[str] | None = None, types: list[str] | None = None
) -> Doc:
    """The log's events of these streams and types (all of them for None), on the paths the
    log's field map keeps them at (docs/adopting.md)."""
    fm = store.fieldmap
    query: Doc = {}
    if stream:
        query[fm.stream] = stream[0] if len(stream) == 1 else {"$in": stream}
    if types:
        query[fm.type] = types[0] if len(types) == 1 else {"$in": types}
    return query


def read_events(store: MongoStore, query: Doc) -> Iterator[Doc]:
    """The log's documents matching `query`, whole and as stored (in the map's shape), in `_id`
    order."""
    with translate_errors(store.uri):
        yield from store.events.find(query).sort("_id", 1).batch_size(READ_BATCH)


def replace_events(store: MongoStore, docs: list[Doc]) -> int:
    """Write these events back whole (same `_id`, every field in its place); how many matched.

    A whole-document replace, not `$set`: the one write that keeps a date a date on every
    server evstream runs on (docs/storage.md).
    """
    if not docs:
        return 0
    with translate_errors(store.uri):
        result = store.events.bulk_write(
            [ReplaceOne({"_id": doc["_id"]}, doc) for doc in docs], ordered=False
        )
    return int(result.matched_count)


def count_events(store: MongoStore, query: Doc) -> int:
    """How many events match `query`, counted as `find` finds them."""
    with translate_errors(store.uri):
        return store.count(store.events, query)


def archive_candidates(
    store: MongoStore, before: datetime, streams: list[str] | None
) -> Iterator[Doc]:
    """The events with `ts` before `before` (of these streams), whole, in (stream, version) order:
    canonical events on a mapped log (`Canonical`, keeping the stored document for the file;
    docs/adopting.md). Only for a log with versions.

    The server's comparison may be coarser than a millisecond (nx-27017 compares whole seconds):
    the query asks a second more and the exact cut is made here, so every store selects alike.
    """
    fm = store.fieldmap
    assert fm.version is not None
    upper = before + timedelta(seconds=1)
    cond = store.ts_before(upper) if fm.ts_unit == "date" else store.ts_range("$lt", upper)
    query: Doc = {fm.ts: cond}
    if streams:
        query[fm.stream] = {"$in": streams}
    with translate_errors(store.uri):
        cursor = (
            store.events.find(query).sort([(fm.stream, 1), (fm.version, 1)]).batch_size(READ_BATCH)
        )
        naive = _naive(before)
        aware = naive.replace(tzinfo=timezone.utc) if before.tzinfo is None else before
        docs = read_ahead(cursor)
        for doc in map(fm.watched, docs) if fm.translates else docs:
            ts = doc.get("ts")
            if isinstance(ts, datetime) and ts < (naive if ts.tzinfo is None else aware):
                yield doc


def read_ahead(cursor: Any, depth: int = 2) -> Iterator[Doc]:
    """A cursor's documents, fetched by a second thread up to `depth` batches ahead, so that
    the server finds the next batch while the caller works on this one (an archive's encoding,
    folds and gzip; docs/lifecycle.md, "Performance"). The thread is the cursor's only user;
    its errors are raised here, and it stops (closing the cursor) when the caller does."""
    box: queue.Queue[list[Doc] | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: list[Doc] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            batch: list[Doc] = []
            for doc in cursor:
                batch.append(doc)
                if len(batch) >= READ_BATCH:
                    if not put(batch):
                        return
                    batch = []
            if put(batch):
                put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            put(exc)
        finally:
            cursor.close()

    threading.Thread(target=read, name="evstream-read-ahead", daemon=True).start()
    try:
        while True:
            item = box.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item
    finally:
        stop.set()


def delete_events_by_id(store: MongoStore, ids: list[Any]) -> int:
    """Delete these events (in batches); how many went."""
    gone = 0
    with translate_errors(store.uri):
        for i in range(0, len(ids), ARCHIVE_DELETE_BATCH):
            part = ids[i : i + ARCHIVE_DELETE_BATCH]
            gone += int(store.events.delete_many({"_id": {"$in": part}}).deleted_count)
    return gone


def existing_ids(store: MongoStore, ids: list[Any]) -> set[Any]:
    """Which of these ids the log holds."""
    found: set[Any] = set()
    with translate_errors(store.uri):
        for i in range(0, len(ids), DELETE_BATCH):
            part = ids[i : i + DELETE_BATCH]
            found.update(d["_id"] for d in store.events.find({"_id": {"$in": part}}, {"_id": 1}))
    return found


def free_versions(store: MongoStore, places: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of these (stream, version) places hold no event (one query; the unique
    `{stream, version}` index refuses a racing writer)."""
    fm = store.fieldmap
    if fm.version is None:
        return set()  # a log without versions has no places to fill
    taken: set[tuple[str, int]] = set()
    for i in range(0, len(places), DELETE_BATCH):
        part = places[i : i + DELETE_BATCH]
        query = {"$or": [{fm.stream: s, fm.version: v} for s, v in part]}
        for doc in store.events.find(query, {"_id": 0, fm.stream: 1, fm.version: 1}):
            taken.add((get_path(doc, fm.stream), get_path(doc, fm.version)))
    return {p for p in places if p not in taken}


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None) if moment.tzinfo else moment


# --- archive runs ------------------------------------------------------------------------------


def unfinished_archive(store: MongoStore) -> Doc | None:
    """The archive run that has not finished, if any (at most one at a time)."""
    with translate_errors(store.uri):
        return store.collection(ARCHIVES).find_one({"state": {"$ne": "done"}})


def finished_archive(store: MongoStore, path: str) -> Doc | None:
    """The finished archive run that wrote this file, if any."""
    with translate_errors(store.uri):
        return store.collection(ARCHIVES).find_one({"path": path, "state": "done"})


def archive_runs_exist(store: MongoStore) -> bool:
    """Whether an archive ever ran here (a log never archived has no record)."""
    with translate_errors(store.uri):
        return store.collection(ARCHIVES).find_one({}, {"_id": 1}) is not None


def archive_runs(store: MongoStore) -> list[Doc]:
    """Every archive run, oldest first."""
    with translate_errors(store.uri):
        return list(store.collection(ARCHIVES).find().sort("started_at", 1))


def insert_archive(store: MongoStore, doc: Doc) -> bool:
    """Record a new run; False when a run with that `_id` exists already."""
    with translate_errors(store.uri):
        try:
            store.collection(ARCHIVES).insert_one(doc)
        except DuplicateKeyError:
            return False
    return True


def save_archive(store: MongoStore, doc: Doc) -> None:
    """Write a run's record whole (dates stay dates on every server)."""
    with translate_errors(store.uri):
        store.collection(ARCHIVES).replace_one({"_id": doc["_id"]}, doc, upsert=True)


def _entries(doc: Doc) -> Iterator[tuple[str, int, list[Doc]]]:
    """A record's archived streams: (stream, through, snapshots). A chunk holds its streams in
    columns (`streams`, `through`, and per projection `folds`, compressed); a record of the
    first layout (one document per stream) is read alike."""
    names = doc.get("streams")
    if isinstance(names, list):
        throughs = doc.get("through") or []
        folds = _folds(doc.get("folds"))
        for i, name in enumerate(names):
            through = throughs[i] if i < len(throughs) else None
            if not isinstance(through, int):
                continue
            snapshots = []
            for fold in folds:
                upto, states = fold.get("through") or [], fold.get("state") or []
                if i < len(upto) and isinstance(upto[i], int):
                    snapshots.append(
                        {
                            "projection": fold.get("projection"),
                            "fold_version": fold.get("fold_version"),
                            "through": upto[i],
                            "state": states[i] if i < len(states) else None,
                        }
                    )
            yield name, through, snapshots
    elif isinstance(doc.get("through"), int):
        yield doc["_id"], doc["through"], doc.get("snapshots") or []


def _folds(value: Any) -> list[Doc]:
    """A chunk's per-projection columns, unpacked (`_packed`)."""
    if isinstance(value, bytes):
        return list(bson.decode(zlib.decompress(value), codec_options=CODEC)["folds"])
    return list(value or [])


def _packed(folds: list[Doc]) -> bson.Binary:
    """A chunk's per-projection columns as zlib-compressed BSON."""
    return bson.Binary(zlib.compress(bson.encode({"folds": folds}), 1))


def _columns(run: str, seq: int, part: str, records: list[Doc]) -> Doc:
    """A chunk's document: its records in columns, each snapshot's projection named once, the
    states zlib-compressed BSON (a sixth of the bytes to store; on nx-27017 a tenth of the
    time to write)."""
    folds: dict[tuple[Any, Any], Doc] = {}
    for i, record in enumerate(records):
        for snap in record["snapshots"]:
            name = (snap.get("projection"), snap.get("fold_version"))
            fold = folds.get(name)
            if fold is None:
                fold = folds[name] = {
                    "projection": name[0],
                    "fold_version": name[1],
                    "through": [None] * len(records),
                    "state": [None] * len(records),
                }
            fold["through"][i] = snap.get("through")
            fold["state"][i] = snap.get("state")
    return {
        "_id": f"{run}:{seq:07d}{part}",
        "run": run,
        "seq": seq,
        "streams": [r["stream"] for r in records],
        "through": [r["through"] for r in records],
        "folds": _packed(list(folds.values())),
    }


def _newest(docs: Iterable[Doc], wanted: set[str] | None = None) -> dict[str, Doc]:
    """Each stream's newest record (the highest `through`: a later run carries the earlier
    one's snapshots forward): `{stream: {stream, through, run, snapshots}}`."""
    found: dict[str, Doc] = {}
    for doc in docs:
        for name, through, snapshots in _entries(doc):
            if wanted is not None and name not in wanted:
                continue
            old = found.get(name)
            if old is None or through > old["through"]:
                found[name] = {
                    "stream": name,
                    "through": through,
                    "run": doc.get("run"),
                    "snapshots": snapshots,
                }
    return found


def _standing_runs(store: MongoStore, besides: str | None = None) -> list[Doc]:
    """The runs whose records stand: those past `writing` (a run still writing stores records
    that count only once its file is verified; a cancelled run has no record), but `besides`."""
    return [
        run
        for run in archive_runs(store)
        if run.get("state") in ("written", "deleting", "done") and run["_id"] != besides
    ]


def _visible(store: MongoStore, besides: str | None = None) -> Doc:
    """The query for the records that stand (`_standing_runs`)."""
    return {"run": {"$in": [run["_id"] for run in _standing_runs(store, besides)]}}


def archived_versions(store: MongoStore, *, besides: str | None = None) -> dict[str, int]:
    """Each archived stream's highest archived version (of runs other than `besides`)."""
    edges: dict[str, int] = {}
    with translate_errors(store.uri):
        coll = store.collection(ARCHIVED_STREAMS)
        for doc in coll.find(_visible(store, besides), {"streams": 1, "through": 1}):
            for name, through, _ in _entries(doc):
                if through > edges.get(name, 0):
                    edges[name] = through
    return edges


def snapshots_of(store: MongoStore, projection: str, fold_version: int) -> Iterator[Doc]:
    """A projection's snapshots (`stream`, `through`, `state`), in stream order: each
    run's chunks are in stream order, merged across runs, the newest record of a stream
    winning."""
    with translate_errors(store.uri):
        coll = store.collection(ARCHIVED_STREAMS)
        ordered = [_run_records(coll, run) for run in _standing_runs(store)]
        merged = heapq.merge(*ordered, key=lambda record: record["stream"])
        for _, group in itertools.groupby(merged, key=lambda record: record["stream"]):
            record = max(group, key=lambda r: r["through"])
            snap = _snapshot_in(record, projection, fold_version)
            if snap is not None:
                yield snap


def _run_records(coll: Any, run: Doc) -> Iterator[Doc]:
    """A run's records in stream order. Runs are merged, so each holds a cursor open: a few
    chunks a batch keeps that small."""
    if run.get("records") != "chunks":  # the first layout: a document per stream
        first: Doc = {"run": run["_id"], "seq": {"$exists": False}}
        for doc in coll.find(first).sort("_id", 1).batch_size(READ_BATCH):
            yield from _newest([doc]).values()
    query: Doc = {"run": run["_id"], "seq": {"$exists": True}}
    for doc in coll.find(query).sort([("seq", 1), ("_id", 1)]).batch_size(4):
        yield from _newest([doc]).values()


def snapshots_for(
    store: MongoStore, projection: str, fold_version: int, streams: list[str]
) -> dict[str, Doc]:
    """A projection's snapshots of these streams, by stream."""
    found: dict[str, Doc] = {}
    for record in archived_streams(store, streams).values():
        snap = _snapshot_in(record, projection, fold_version)
        if snap is not None:
            found[record["stream"]] = snap
    return found


def _snapshot_in(record: Doc, projection: str, fold_version: int) -> Doc | None:
    for snap in record.get("snapshots") or []:
        if snap.get("projection") == projection and snap.get("fold_version") == fold_version:
            return {**snap, "stream": record["stream"]}
    return None


def archived_streams(
    store: MongoStore, streams: list[str], *, besides: str | None = None
) -> dict[str, Doc]:
    """The newest archive records of these streams (edge and snapshots; of runs other than
    `besides`), by stream: `{stream, through, run, snapshots}`."""
    wanted = set(streams)
    query = {
        "$or": [{"streams": {"$in": streams}}, {"_id": {"$in": streams}}],
        **_visible(store, besides),
    }
    with translate_errors(store.uri):
        return _newest(store.collection(ARCHIVED_STREAMS).find(query), wanted)


def save_archived_chunk(store: MongoStore, run: str, seq: int, records: list[Doc]) -> None:
    """Store one chunk of a run's archived streams (`{stream, through, snapshots}` in stream
    order) as one document of parallel arrays, `_id` `<run>:<seq>`: one insert for up to a
    thousand streams (one per stream made an archive several times slower; docs/lifecycle.md).
    A chunk over MongoDB's document limit is split in halves, each with the same `seq`. Stored
    already (a second try): left as it is, being the same."""
    coll = store.collection(ARCHIVED_STREAMS)
    docs = _chunk_docs(run, seq, records, "")
    with translate_errors(store.uri):
        if seq == 0:
            coll.create_index([("streams", 1)], name="streams_1")
            coll.create_index([("run", 1), ("seq", 1)], name="run_1_seq_1")
        try:
            coll.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            duplicates_only(exc)


def _chunk_docs(run: str, seq: int, records: list[Doc], part: str) -> list[Doc]:
    doc = _columns(run, seq, part, records)
    if len(records) > 1 and len(bson.encode(doc)) > CHUNK_BYTES:
        half = len(records) // 2
        return _chunk_docs(run, seq, records[:half], part + "a") + _chunk_docs(
            run, seq, records[half:], part + "b"
        )
    return [doc]


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def drop_run_chunks(store: MongoStore, run: str) -> int:
    """Delete what a run stored of its archived streams (a run that writes its file afresh
    stores them afresh)."""
    with translate_errors(store.uri):
        return int(store.collection(ARCHIVED_STREAMS).delete_many({"run": run}).deleted_count)


def forget_archived_stream(store: MongoStore, stream: str) -> int:
    """Take a stream out of every archive record (its edge and snapshots); how many records
    held it."""
    changed = 0
    coll = store.collection(ARCHIVED_STREAMS)
    with translate_errors(store.uri):
        changed += int(coll.delete_many({"_id": stream}).deleted_count)
        for doc in list(coll.find({"streams": {"$in": [stream]}})):
            keep = [i for i, name in enumerate(doc["streams"]) if name != stream]
            changed += 1
            if not keep:
                coll.delete_one({"_id": doc["_id"]})
                continue
            folds = _folds(doc.get("folds"))
            doc["streams"] = [doc["streams"][i] for i in keep]
            doc["through"] = [_at(doc.get("through"), i) for i in keep]
            for fold in folds:
                for column in ("through", "state"):
                    fold[column] = [_at(fold.get(column), i) for i in keep]
            doc["folds"] = _packed(folds)
            # $set, not a replace: nx-27017 cannot replace a document holding binary values
            # (docs/storage.md); none of these fields is a date.
            fields = {k: doc[k] for k in ("streams", "through", "folds")}
            coll.update_one({"_id": doc["_id"]}, {"$set": fields})
    return changed


# --- erasing -----------------------------------------------------------------------------------


def tombstone_key(store: MongoStore) -> bytes:
    """The database's secret key for tombstone hashes, made on first use."""
    coll = store.collection(KEYS)
    with translate_errors(store.uri):
        doc = coll.find_one({"_id": "tombstones"})
        if doc is None:
            try:
                coll.insert_one({"_id": "tombstones", "key": secrets.token_hex(32)})
            except DuplicateKeyError:
                pass  # another run made it first: use theirs
            doc = coll.find_one({"_id": "tombstones"})
    assert doc is not None
    return bytes.fromhex(str(doc["key"]))


def stream_hash(key: bytes, stream: str) -> str:
    """The keyed hash of a stream's name that a tombstone holds (HMAC-SHA256)."""
    return hmac.new(key, stream.encode("utf-8"), hashlib.sha256).hexdigest()


def any_tombstone(store: MongoStore) -> bool:
    """Whether any stream was ever erased here."""
    with translate_errors(store.uri):
        return store.collection(TOMBSTONES).find_one({}, {"_id": 1}) is not None


def tombstones_among(store: MongoStore, hashes: list[str]) -> set[str]:
    """Which of these hashes have a tombstone."""
    with translate_errors(store.uri):
        found = store.collection(TOMBSTONES).find({"_id": {"$in": hashes}}, {"_id": 1})
        return {str(d["_id"]) for d in found}


def load_tombstone(store: MongoStore, digest: str) -> Doc | None:
    """A tombstone by its hash."""
    with translate_errors(store.uri):
        return store.collection(TOMBSTONES).find_one({"_id": digest})


def save_tombstone(store: MongoStore, doc: Doc) -> None:
    """Write a tombstone whole."""
    with translate_errors(store.uri):
        store.collection(TOMBSTONES).replace_one({"_id": doc["_id"]}, doc, upsert=True)


def stream_event_ids(store: MongoStore, stream: str) -> list[Any]:
    """The ids of a stream's events, as watches and checkpoints know them (the map's id path);
    the `{stream, version}` index serves it."""
    fm = store.fieldmap
    with translate_errors(store.uri):
        found = store.events.find({fm.stream: stream}, {fm.id: 1})
        return [d["_id"] if fm.id == "_id" else get_path(d, fm.id) for d in found]


def delete_stream_events(store: MongoStore, stream: str) -> int:
    """Delete a stream's events; how many went."""
    with translate_errors(store.uri):
        return int(store.events.delete_many({store.fieldmap.stream: stream}).deleted_count)


def projection_collections(store: MongoStore) -> list[str]:
    """Every collection that holds a projection evstream rebuilt here (sessions included)."""
    names = {SESSIONS}
    with translate_errors(store.uri):
        for doc in store.collection(PROJECTIONS).find({}, {"collection": 1}):
            if isinstance(doc.get("collection"), str):
                names.add(doc["collection"])
    return sorted(names)


def delete_by(store: MongoStore, collection: str, query: Doc) -> int:
    """Delete what matches `query` in `collection`; how many went."""
    with translate_errors(store.uri):
        return int(store.collection(collection).delete_many(query).deleted_count)


def delete_window_ids(store: MongoStore, ids: list[Any]) -> int:
    """Delete these event ids from every checkpoint's window."""
    gone = 0
    with translate_errors(store.uri):
        for i in range(0, len(ids), DELETE_BATCH):
            found = store.ids_matching(CHECKPOINT_WINDOW, "id", ids[i : i + DELETE_BATCH])
            if found:
                coll = store.collection(CHECKPOINT_WINDOW)
                gone += int(coll.delete_many({"_id": {"$in": found}}).deleted_count)
    return gone


def forget_checkpoint_ids(store: MongoStore, ids: list[Any]) -> int:
    """Checkpoints whose position is one of these events keep its time and lose its id (the
    empty string, below every id: a restarted watch shows the events of that millisecond again
    rather than skip one); how many changed."""
    changed = 0
    wanted = set(ids)
    coll = store.collection(CHECKPOINTS)
    with translate_errors(store.uri):
        for i in range(0, len(ids), DELETE_BATCH):
            part = ids[i : i + DELETE_BATCH]
            found = store.ids_matching(CHECKPOINTS, "position.id", part)
            found += store.ids_matching(CHECKPOINTS, "settled.id", part)
            if not found:
                continue
            for doc in list(coll.find({"_id": {"$in": list(dict.fromkeys(found))}})):
                for key in ("position", "settled"):
                    mark = doc.get(key)
                    if isinstance(mark, dict) and mark.get("id") in wanted:
                        mark["id"] = ""
                coll.replace_one({"_id": doc["_id"]}, doc)
                changed += 1
    return changed


def delete_dead_letters(store: MongoStore, stream: str, ids: list[Any]) -> int:
    """Delete the dead letters of a stream's changes (by the stream's name or its event ids)."""
    ops: list[Any] = [
        DeleteMany({"change.stream": stream}),
        DeleteMany({f"change.fullDocument.{store.fieldmap.stream}": stream}),
        DeleteMany({"change.documentKey._id": stream}),
    ]
    with translate_errors(store.uri):
        if store.collection(DEAD_LETTERS).find_one({}, {"_id": 1}) is None:
            return 0
        for i in range(0, len(ids), DELETE_BATCH):
            part = ids[i : i + DELETE_BATCH]
            found = store.ids_matching(DEAD_LETTERS, "change_id", part)
            found += store.ids_matching(DEAD_LETTERS, "change._id", part)
            if found:
                ops.append(DeleteMany({"_id": {"$in": list(dict.fromkeys(found))}}))
        return int(store.collection(DEAD_LETTERS).bulk_write(ops, ordered=True).deleted_count)


def forget_archive_streams(store: MongoStore, stream: str, digest: str) -> list[Doc]:
    """Archive runs whose selection names the stream get its hash in place of the name, and
    lose the stream's event ids from their samples (known by the stream's hash); returns every
    run that may hold the stream's events (named, or run over every stream)."""
    runs = archive_runs(store)
    mark = f"erased:{digest[:16]}"
    with translate_errors(store.uri):
        for run in runs:
            names = run.get("streams")
            sample = run.get("sample") or []
            named = isinstance(names, list) and stream in names
            sampled = any(item.get("stream") == digest for item in sample)
            if named:
                run["streams"] = [mark if s == stream else s for s in names]
            if sampled:
                run["sample"] = [i for i in sample if i.get("stream") != digest]
            if named or sampled:
                store.collection(ARCHIVES).replace_one({"_id": run["_id"]}, run)
    return [r for r in runs if not isinstance(r.get("streams"), list) or mark in r["streams"]]


def owned_collections(store: MongoStore) -> list[str]:
    """The collections evstream keeps (events, projections, evstream_*)."""
    with translate_errors(store.uri):
        names = store.db.list_collection_names()
    keep = set(projection_collections(store)) | {EVENTS, store.fieldmap.collection}
    return sorted(n for n in names if n in keep or n.startswith(OWN_PREFIX))


def explain_stream_delete(store: MongoStore, stream: str) -> Doc:
    """The server's plan for finding a stream's events (to show it is index-served)."""
    with translate_errors(store.uri):
        return dict(store.events.find({store.fieldmap.stream: stream}, {"_id": 1}).explain())


def documents(store: MongoStore, collection: str) -> Iterable[Doc]:
    """Every document of a collection (for tests and scans)."""
    with translate_errors(store.uri):
        return list(store.collection(collection).find())
