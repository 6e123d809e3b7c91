"""`evstream watch`: follow a collection's changes, history then live, with named checkpoints.

How the event log is followed without a gap or a duplicate
----------------------------------------------------------
For `events` the log itself is the history and the checkpoint, never the server's change history:
nx-27017 keeps only the newest 1,000 change entries per collection and silently resumes past lost
ones, and a real oplog rolls over. Every session (the first one, and each one after a lost
connection or a restart from a checkpoint) goes:

1. Open the change stream. From here on, the stream delivers every change committed after
   this moment (T0), in commit order.
2. Read the log in ts order (events with equal ts in the order they were stored, which keeps a
   batch's versions in order; that is the ts index's own order, so MongoDB streams it rather
   than sorting the log), from what is not known to be shown yet. Together with
   the stream, this covers everything: what was committed before T0 is in the log when the
   read gets there, and what was committed after T0 is in the stream. An event committed
   between T0 and the read is in both; it is shown once because every shown event's _id is
   remembered (the `Ledger`) and the stream's copy is dropped.
3. Follow the stream.

The ledger cannot remember every id forever. It remembers exactly the ids shown within a window
below the newest shown `ts` (twice `MARGIN`), and summarises everything older as one settled
position (ts, _id): "everything at or below this was shown". That summary is only right if no
event can still arrive with a `ts` below it, and `ts` is the publisher's clock at publish time:
an insert in flight, a slow batch or a skewed clock can make an event with a slightly older `ts`
land after a newer one. `MARGIN` (2 s) bounds that disorder, and the window is twice that, so a
late event always finds the ledger still holding the ids around it: it is shown, once.

- While the read and the stream overlap (from T0 until the stream is seen caught up after the
  read), nothing with ts >= T0 - MARGIN is summarised, however long the read takes.
- An event that breaks the bound (its `ts` is older than the settled position, e.g. imported
  with its original timestamp) is shown anyway, with a warning that it may repeat: evstream
  never drops an event it cannot prove it has shown.
- A checkpoint is the ledger: one document per name in `evstream_checkpoints` (the settled
  position, the newest shown event, filters, updated_at) plus the ids of the window, one small
  document each in `evstream_checkpoint_window`, written after every printed change. Every few
  hundred changes (or second) the document is rewritten and ids below the settled position
  deleted. A restarted watcher runs the same three steps from it: nothing is lost, and only the
  change printed right before a `kill -9` (printed, not yet saved) can show again.

Other collections are not append-only logs: their checkpoints are the server's resume tokens.
When the server can no longer resume from one, evstream says so and stops (`CheckpointLost`).
"""

from __future__ import annotations

import heapq
import json
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId, json_util
from bson.tz_util import utc as bson_utc
from pymongo.errors import ConnectionFailure, OperationFailure

from evstream.errors import EvstreamError, ExitCode, FeatureUnsupported, InvalidInput
from evstream.interrupts import CTRL_C
from evstream.storage import CHECKPOINTS, EVENTS, NO_CHANGE_STREAMS_CODES, OWN_PREFIX, Store

UTC = timezone.utc
OPS = ("insert", "update", "replace", "delete")
# How far an event's `ts` may lag behind events committed before it (in-flight inserts, slow
# batches, publishers' clocks). The ledger keeps exact ids for twice this below the newest `ts`.
MARGIN = timedelta(seconds=2)
# The ids of a log checkpoint's window: one small document per printed event, so that saving
# after every change stays one small insert however busy the log is (see `record_shown`).
CHECKPOINT_WINDOW = OWN_PREFIX + "checkpoint_window"
# A getMore may wait this long for changes on a server that honours maxAwaitTimeMS.
AWAIT_MS = 500
# When the server answers at once with nothing (nx-27017 does), wait before asking again:
# a tenth of the quiet time so far, between these bounds. An event after a quiet spell is
# printed at most ~10% of that spell (and at most PACE_MAX) later; an idle watcher asks ~10/s.
PACE_MIN = 0.0005
PACE_MAX = 0.1
# Following the log by polling (servers without change streams): between these bounds.
POLL_MIN = 0.02
POLL_MAX = 1.0
# Waits between attempts to reconnect after a lost connection, in seconds.
BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0, 5.0)
HISTORY_LOST_CODES = {
    286: "ChangeStreamHistoryLost",
    260: "InvalidResumeToken",
    280: "ChangeStreamFatalError",
}
# Server errors that mean "try again on a healthy connection" (shutdown, step-down, cursor lost).
RETRYABLE_CODES = {6, 7, 43, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150}
INVALIDATING_OPS = {"drop", "rename", "dropDatabase", "invalidate"}
MIN_TS = datetime(1970, 1, 1, tzinfo=UTC)


class CheckpointLost(EvstreamError):
    """The server can no longer resume from a saved position: exit 2, with how to recover."""

    exit_code = ExitCode.USAGE


class CollectionGone(EvstreamError):
    """The watched collection was dropped or renamed: the watch ends (exit 1)."""

    exit_code = ExitCode.UNEXPECTED


class _Stop(Exception):
    """--limit reached or --idle-timeout passed: a normal end."""


_IDLE = object()  # the reader found the stream caught up
_QUIET = object()  # nothing from the reader for a while


class _Prefetch:
    """Reads a change stream in a thread, so the server works on the next batch while the
    current one is printed (pymongo asks for a batch only when the last one is used up).

    Changes go through a bounded queue in order; the main thread handles, prints and saves
    them, so what is saved is still exactly what was printed. The reader paces empty answers
    (see PACE_MIN), marks the moment the stream is caught up, and hands errors over.
    """

    def __init__(
        self, stream: Any, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.sleep = sleep
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # C: cheap per change
        self.stopping = threading.Event()
        self.token: Any = None  # the resume token at the last empty answer
        self.thread = threading.Thread(target=self._run, name="evstream-watch", daemon=True)
        self.thread.start()

    def get(self, timeout: float) -> Any:
        """The next change, _IDLE, or an exception to raise; queue.Empty after `timeout`."""
        return self.queue.get(timeout=timeout)

    def close(self) -> None:
        """Stop reading (before the stream is closed)."""
        self.stopping.set()
        self.thread.join(AWAIT_MS / 1000 + 2)

    def _put(self, item: Any) -> bool:
        """Queue an item; wait while 4,096 are waiting (memory stays bounded on a backlog)."""
        while self.queue.qsize() >= 4096:
            if self.stopping.wait(0.005):
                return False
        if self.stopping.is_set():
            return False
        self.queue.put(item)
        return True

    def _run(self) -> None:
        idle_since = self.clock()
        was_idle = False
        try:
            while not self.stopping.is_set():
                asked = self.clock()
                change = self.stream.try_next()
                if change is not None:
                    was_idle = False
                    idle_since = self.clock()
                    if not self._put(change):
                        return
                    continue
                now = self.clock()
                self.token = self.stream.resume_token
                if not was_idle:
                    was_idle = True
                    if not self._put(_IDLE):
                        return
                if now - asked < AWAIT_MS / 2000:
                    self.sleep(idle_pause(now - idle_since))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread to raise
            if not self.stopping.is_set():
                self._put(exc)


# --- what was asked ------------------------------------------------------------------------------


@dataclass
class WatchOptions:
    """What to follow and how: the command line of `evstream watch`, parsed."""

    collection: str = EVENTS
    types: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    start: str | datetime = "now"  # "now", "start" or a time
    start_given: bool = False
    checkpoint: str | None = None
    reset_checkpoint: bool = False
    limit: int | None = None
    idle_timeout: float | None = None
    poll: bool = False  # follow the log by polling even where change streams work

    @property
    def is_log(self) -> bool:
        """Whether the watched collection is the event log."""
        return self.collection == EVENTS

    def filters(self) -> dict[str, list[str]]:
        """The filters, as saved with a checkpoint."""
        return {
            "types": sorted(self.types),
            "streams": sorted(self.streams),
            "ops": sorted(self.ops),
        }


def parse_start(text: str | None, *, local: timezone | None = None) -> str | datetime:
    """--from: 'now', 'start', or an ISO-8601 time (local time when it has no offset)."""
    if text is None or text.strip().lower() == "now":
        return "now"
    value = text.strip()
    if value.lower() == "start":
        return "start"
    try:
        when = datetime.fromisoformat(
            value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        )
    except ValueError:
        raise InvalidInput(
            f"--from {text!r} is not now, start or an ISO-8601 time such as 2024-05-01T10:30:00Z"
        ) from None
    try:
        if when.tzinfo is None:
            when = when.replace(tzinfo=local) if local else when.astimezone()
        return when.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise InvalidInput(f"--from {text!r} is out of the range of dates") from None


def check_ops(ops: Iterable[str]) -> list[str]:
    """Validate --op values."""
    checked = []
    for op in ops:
        name = op.strip().lower()
        if name not in OPS:
            raise InvalidInput(f"--op {op!r} is not one of {', '.join(OPS)}")
        checked.append(name)
    return checked


# --- one change, as shown ------------------------------------------------------------------------


@dataclass
class Change:
    """One change as evstream shows it: operation, collection, document key, full document."""

    op: str
    collection: str
    key: dict[str, Any]
    doc: dict[str, Any] | None
    when: datetime | None = None  # the event's ts, else the change's wall time

    def record(self) -> dict[str, Any]:
        """The JSON line's shape (README, Output): op, collection, key, doc."""
        return {"op": self.op, "collection": self.collection, "key": self.key, "doc": self.doc}


@dataclass
class Hooks:
    """Where a watch reports: each change to show, notices and warnings for stderr."""

    deliver: Callable[[Change], None]
    notice: Callable[[str], None] = lambda message: None
    warning: Callable[[str], None] = lambda message: None


# --- the ledger: what of the log has been shown --------------------------------------------------

Position = tuple[datetime, tuple[int, Any]]


def id_key(value: Any) -> tuple[int, Any]:
    """A sortable, hashable stand-in for an _id, ordered by type as BSON orders them."""
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, ObjectId):
        return (7, str(value))
    if isinstance(value, datetime):
        return (9, aware(value).isoformat())
    if isinstance(value, bytes):
        return (5, value)
    return (3, json_util.dumps(value))


def aware(when: datetime) -> datetime:
    """A datetime in UTC; naive ones are taken to be UTC already (as BSON dates are)."""
    tz = when.tzinfo
    if tz is UTC or tz is bson_utc:
        return when
    return when.replace(tzinfo=UTC) if tz is None else when.astimezone(UTC)


def position(doc: Mapping[str, Any]) -> Position:
    """An event's place in log order: (ts, _id)."""
    ts = doc.get("ts")
    return (aware(ts) if isinstance(ts, datetime) else MIN_TS, id_key(doc.get("_id")))


class Ledger:
    """What of the log has been shown: exact ids near the newest end, one settled position below.

    Pure bookkeeping, no I/O; see the module docstring for why it is right.
    """

    def __init__(
        self,
        margin: timedelta = MARGIN,
        *,
        settled: Position | None = None,
        recent: Iterable[tuple[Position, Any]] = (),
        origin: datetime | None = None,
    ) -> None:
        self.margin = margin
        self.settled = settled
        self.origin = origin
        self._entries: list[Position] = []
        self._ids: dict[tuple[int, Any], Any] = {}  # id key -> the raw _id
        self.newest: Position | None = settled
        self.window = 2 * margin
        self._adds = 0
        self.floor: datetime | None = None
        self.read_ended: datetime | None = None
        for pos, raw in recent:
            self._add(pos, raw)

    def __len__(self) -> int:
        return len(self._entries)

    def knows(self, doc: Mapping[str, Any]) -> bool:
        """Whether this event has been shown (by id, or at or below the settled position)."""
        pos = position(doc)
        return pos[1] in self._ids or (self.settled is not None and pos <= self.settled)

    def admit_read(self, doc: Mapping[str, Any]) -> bool:
        """An event read from the log: True (and remembered) if it has not been shown yet."""
        if self.knows(doc):
            return False
        self._add(position(doc), doc.get("_id"))
        return True

    def admit_live(self, doc: Mapping[str, Any]) -> str:
        """An event from the change stream: 'new', 'seen' (drop it), or 'late' (show it, warn).

        'late' is an event below the settled position that the ledger no longer holds ids
        for: its `ts` broke the margin, so it may or may not have been shown.
        """
        pos = position(doc)
        if pos[1] in self._ids:
            return "seen"
        if self.settled is not None and pos <= self.settled:
            return "late"
        self._add(pos, doc.get("_id"))
        return "new"

    def start_overlap(self, opened_at: datetime) -> None:
        """A stream opened at this time and the log is about to be read: keep ids above it."""
        self.floor = aware(opened_at) - self.margin
        self.read_ended = None

    def end_read(self, when: datetime) -> None:
        """The log read of this session is done."""
        self.read_ended = aware(when)

    def live_progress(self, *, idle: bool = False, ts: datetime | None = None) -> None:
        """The stream is caught up (idle) or delivered an event with this ts: maybe end overlap.

        After the read, an empty answer from the stream, or an event that was certainly
        committed after the read ended, means no event in both can still come.
        """
        if self.floor is None or self.read_ended is None:
            return
        if idle or (ts is not None and aware(ts) >= self.read_ended + self.margin):
            self.floor = None
            self._trim()

    def read_from(self) -> datetime | None:
        """Where a log read must start: everything below is known to be shown (None: all)."""
        if self.settled is not None:
            return self.settled[0]
        return self.origin

    def _add(self, pos: Position, raw: Any) -> None:
        heapq.heappush(self._entries, pos)
        self._ids[pos[1]] = raw
        if self.newest is None or pos > self.newest:
            self.newest = pos
        self._adds += 1
        if self._adds % 64 == 0:
            self._trim()

    def _threshold(self) -> datetime | None:
        if self.newest is None:
            return None
        threshold = self.newest[0] - self.window
        if self.floor is not None:
            threshold = min(threshold, self.floor)
        return threshold

    def _trim(self) -> None:
        """Summarise entries below the window into the settled position (smallest first)."""
        threshold = self._threshold()
        entries = self._entries
        if threshold is None:
            return
        while entries and entries[0][0] < threshold:
            pos = heapq.heappop(entries)
            self._settle(pos)  # before its id is forgotten: the settled position keeps it
            self._ids.pop(pos[1], None)

    def _settle(self, pos: Position) -> None:
        if self.settled is None or pos > self.settled:
            self.settled = pos
            self._settled_raw = self._ids.get(pos[1], self._settled_raw)

    _settled_raw: Any = None

    def snapshot(self) -> dict[str, Any]:
        """The ledger as data: settled position, window entries (ts, _id), newest, origin."""
        self._trim()
        newest_raw = self._ids.get(self.newest[1], self._settled_raw) if self.newest else None
        return {
            "settled": None
            if self.settled is None
            else {"ts": self.settled[0], "id": self._settled_raw},
            "recent": [[pos[0], self._ids.get(pos[1])] for pos in sorted(self._entries)],
            "position": None if self.newest is None else {"ts": self.newest[0], "id": newest_raw},
            "origin": self.origin,
        }

    @classmethod
    def from_snapshot(cls, saved: Mapping[str, Any], margin: timedelta = MARGIN) -> Ledger:
        """A ledger as a checkpoint saved it."""
        settled_doc = saved.get("settled")
        settled = None
        if settled_doc:
            settled = (aware(settled_doc["ts"]), id_key(settled_doc.get("id")))
        recent = [((aware(ts), id_key(raw)), raw) for ts, raw in saved.get("recent") or []]
        origin = saved.get("origin")
        ledger = cls(
            margin,
            settled=settled,
            recent=recent,
            origin=aware(origin) if isinstance(origin, datetime) else None,
        )
        if settled_doc:
            ledger._settled_raw = settled_doc.get("id")
        return ledger


def idle_pause(idle_for: float) -> float:
    """How long to wait before asking again after a quick empty answer (see PACE_MIN)."""
    return min(PACE_MAX, max(PACE_MIN, idle_for / 10))


def poll_pause(idle_for: float) -> float:
    """How long to wait between polls of the log that found nothing new."""
    return min(POLL_MAX, max(POLL_MIN, idle_for / 10))


# --- nx-27017 ------------------------------------------------------------------------------------


class NX27017_WATCH_QUIRKS:  # noqa: N801 - named after the server whose quirks it holds
    """nx-27017's quirks that touch watching (shared/STORES.md), worked around here and only here.

    - Dates compare at whole-second precision: {ts: {$gte: T}} matches all of T's second, and
      {ts: {$gt: T}} skips the rest of it (silently losing events) → `ts_since` asks for the
      whole second, readers re-check `ts >= T` themselves, and nothing here uses $gt on a date.
    - `fullDocument` is decoded JSON: datetimes come as {"$date": "..."} and ObjectIds as
      {"__neosqlite_objectid__": true, "id": "<hex>"} → `full_document` restores them.
    - `documentKey._id` is right for strings and ObjectIds only → `document_key` takes the
      full document's _id where there is one.
    - A drop produces no invalidate event → `collection_gone` asks whether it still exists.
    - A replace is reported as an update, `updateDescription` is null: shown as they come.
    - `getMore` answers at once: paced by the loop for every server (see PACE_MIN).
    """

    @classmethod
    def full_document(cls, value: Any) -> Any:
        """A change's fullDocument with its dates and ObjectIds as BSON types again (in place)."""
        if type(value) is dict:
            if len(value) == 1 and "$date" in value:
                return cls._date(value["$date"], value)
            if value.get("__neosqlite_objectid__") is True and isinstance(value.get("id"), str):
                try:
                    return ObjectId(value["id"])
                except Exception:  # noqa: BLE001 - not an ObjectId after all: leave as is
                    return value
            for k, v in value.items():
                if type(v) is dict or type(v) is list:
                    value[k] = cls.full_document(v)
        elif type(value) is list:
            for i, v in enumerate(value):
                if type(v) is dict or type(v) is list:
                    value[i] = cls.full_document(v)
        return value

    @staticmethod
    def _date(raw: Any, original: Any) -> Any:
        try:
            if isinstance(raw, str):
                text = raw[:-1] + "+00:00" if raw.endswith("Z") else raw
                return aware(datetime.fromisoformat(text))
            value = json_util.loads(json.dumps({"$date": raw}))
            return aware(value) if isinstance(value, datetime) else original
        except (ValueError, TypeError, OverflowError):
            return original

    @staticmethod
    def document_key(change: Mapping[str, Any], doc: Mapping[str, Any] | None) -> dict[str, Any]:
        """The document key, from the full document's _id where nx-27017 mangles other types."""
        key = dict(change.get("documentKey") or {})
        if doc is not None and "_id" in doc:
            key["_id"] = doc["_id"]
        return key

    @staticmethod
    def ts_since(lower: datetime) -> dict[str, Any]:
        """A `ts` condition that matches at least everything at or after `lower` there."""
        return {"$gte": aware(lower).replace(microsecond=0)}

    @staticmethod
    def pipeline(match: dict[str, Any]) -> list[dict[str, Any]]:
        """Its change-stream $match knows field conditions only ($or matches nothing), and it
        sends no drop/invalidate events to let through: the filters alone."""
        return [{"$match": match}]

    @staticmethod
    def collection_gone(store: Store, name: str) -> bool:
        """Whether the collection no longer exists (nx-27017 sends no invalidate on a drop)."""
        return not store.db.list_collection_names(filter={"name": name})


# --- checkpoints ---------------------------------------------------------------------------------


def load_checkpoint(store: Store, name: str) -> dict[str, Any] | None:
    """The saved checkpoint of this name, or None; a log checkpoint with its window as `recent`."""
    doc = store.db[CHECKPOINTS].find_one({"_id": name})
    if doc is not None and doc.get("collection") == EVENTS:
        window = store.db[CHECKPOINT_WINDOW].find({"c": name}, {"_id": 0, "ts": 1, "id": 1})
        doc["recent"] = [
            [w["ts"], w.get("id")] for w in window if isinstance(w.get("ts"), datetime)
        ]
    return doc


def record_shown(store: Store, name: str, entries: Iterable[tuple[datetime, Any]]) -> None:
    """Add printed events (ts, _id) to a log checkpoint's window."""
    docs = [{"c": name, "ts": ts, "id": raw} for ts, raw in entries]
    if len(docs) == 1:
        store.db[CHECKPOINT_WINDOW].insert_one(docs[0])
    elif docs:
        store.db[CHECKPOINT_WINDOW].insert_many(docs, ordered=False)


def forget_below(store: Store, name: str, settled_ts: datetime) -> None:
    """Delete window ids the checkpoint's settled position now covers.

    Below the start of the settled position's second: a subset of `ts < settled_ts` on any
    server, and exact on nx-27017, whose date comparisons are whole-second (keeping a few ids
    too many is harmless; deleting one the position does not cover would repeat it).
    """
    before = NX27017_WATCH_QUIRKS.ts_since(settled_ts)["$gte"]
    store.db[CHECKPOINT_WINDOW].delete_many({"c": name, "ts": {"$lt": before}})


def save_checkpoint(store: Store, doc: dict[str, Any]) -> None:
    """Write a whole checkpoint document, `_id` included, stamped with a BSON date.

    A whole-document replace (not $set) is the one write that keeps datetimes BSON dates on
    nx-27017 (a datetime written with $set is stored as a string there), and the `_id` in the
    replacement keeps the upsert's _id (nx-27017 drops the filter's). Valid on MongoDB too.
    """
    doc = {**doc, "updated_at": datetime.now(UTC)}
    store.db[CHECKPOINTS].replace_one({"_id": doc["_id"]}, doc, upsert=True)


def delete_checkpoint(store: Store, name: str) -> bool:
    """Forget a checkpoint and its window; whether there was one."""
    store.db[CHECKPOINT_WINDOW].delete_many({"c": name})
    return store.db[CHECKPOINTS].delete_one({"_id": name}).deleted_count > 0


def list_checkpoints(store: Store) -> list[dict[str, Any]]:
    """Every saved checkpoint: name, collection, updated_at, position_ts, behind (events only).

    `behind` counts the log's events after the checkpoint's newest shown one (with the
    checkpoint's --type/--stream filters); None for other collections.
    """
    rows = []
    for doc in store.db[CHECKPOINTS].find().sort("_id", 1):
        collection = doc.get("collection")
        row: dict[str, Any] = {
            "name": doc["_id"],
            "collection": collection,
            "updated_at": doc.get("updated_at"),
            "position_ts": None,
            "behind": None,
        }
        if collection == EVENTS:
            pos = doc.get("position") or {}
            ts = pos.get("ts")
            row["position_ts"] = ts if isinstance(ts, datetime) else None
            filters = doc.get("filters") or {}
            if isinstance(ts, datetime):
                after = (aware(ts), id_key(pos.get("id")))
                row["behind"] = _count_after(store, filters, after)
            else:
                origin = doc.get("origin")
                start = (aware(origin), (0, None)) if isinstance(origin, datetime) else None
                row["behind"] = _count_after(store, filters, start, inclusive=True)
        else:
            ts = doc.get("position_ts")
            row["position_ts"] = ts if isinstance(ts, datetime) else None
        rows.append(row)
    return rows


def _count_after(
    store: Store, filters: Mapping[str, Any], after: Position | None, *, inclusive: bool = False
) -> int:
    """How many of the log's events (with these filters) come after a position in log order."""
    query = _log_query(filters)
    if after is None:
        return int(store.events.count_documents(query))
    if not store.is_nx27017:
        ts, (_, raw) = after
        later: dict[str, Any] = {"$gte" if inclusive else "$gt": ts}
        if inclusive:
            query["ts"] = later
        else:
            query["$or"] = [{"ts": later}, {"ts": ts, "_id": {"$gt": raw}}]
        return int(store.events.count_documents(query))
    # nx-27017: no $gt on dates (NX27017_WATCH_QUIRKS), and counting there runs in Python after
    # an aggregation; fetching (_id, ts) of the second onwards and comparing here is faster.
    query["ts"] = NX27017_WATCH_QUIRKS.ts_since(after[0])
    return sum(
        1
        for doc in store.events.find(query, {"_id": 1, "ts": 1}).batch_size(10_000)
        if (position(doc) >= after if inclusive else position(doc) > after)
    )


def change_match(options: WatchOptions) -> dict[str, Any]:
    """--op, --type and --stream as a change stream's $match (empty: no filter)."""
    match: dict[str, Any] = {}
    if options.ops:
        match["operationType"] = {"$in": list(options.ops)}
    if options.types:
        match["fullDocument.type"] = {"$in": list(options.types)}
    if options.streams:
        match["fullDocument.stream"] = {"$in": list(options.streams)}
    return match


def _log_query(filters: Mapping[str, Any]) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if filters.get("types"):
        query["type"] = {"$in": list(filters["types"])}
    if filters.get("streams"):
        query["stream"] = {"$in": list(filters["streams"])}
    return query


# --- the watch -----------------------------------------------------------------------------------


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class Watcher:
    """One `evstream watch` run: sessions of (open, read, follow), reconnecting between them."""

    def __init__(
        self,
        store: Store,
        options: WatchOptions,
        hooks: Hooks,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.options = options
        self.hooks = hooks
        self.clock = clock
        self.sleep = sleep
        self.collection = store.collection(options.collection)
        self.count = 0
        self.ledger: Ledger | None = Ledger() if options.is_log else None
        self.token: Any = None
        self.position_ts: datetime | None = None
        self.polling = options.poll
        self.fresh = True  # no session has run yet
        self.reached = False  # the server answered once: later connection errors are ridden out
        self.needs_read = False  # the next session reads the log (events) / scans (others)
        self.last_change = clock()
        self.outage_since: float | None = None
        self.failures = 0
        self.dirty = False  # a change was printed but its checkpoint not yet saved
        self.warned_late = False
        self.seen_existing = False
        self.next_gone_check = 0.0
        self.scan_ids: dict[str, int] | None = None  # other collections: docs read by --from start
        self._checkpoint_base: dict[str, Any] | None = None
        self.resumed_from: datetime | None = None  # updated_at of the checkpoint continued
        self.unsaved: list[tuple[datetime, Any]] = []  # printed log events not yet in the window
        self.saved_since = 0  # window inserts since the checkpoint document was last written
        self.written_at = clock()

    # --- setup ---

    def prepare(self) -> None:
        """Load, reset or create the checkpoint, and decide where the first session starts."""
        opts = self.options
        if opts.start not in ("now", "start") and not opts.is_log:
            raise InvalidInput(
                "--from TIME needs the events log's ts; for other collections use now or start"
            )
        if opts.poll and not opts.is_log:
            raise InvalidInput("--poll follows the events log only")
        saved = None
        if opts.checkpoint is not None:
            if not opts.checkpoint.strip() or len(opts.checkpoint) > 200:
                raise InvalidInput("--checkpoint NAME must be 1 to 200 characters")
            if opts.reset_checkpoint:
                if delete_checkpoint(self.store, opts.checkpoint):
                    self.hooks.notice(f"checkpoint {opts.checkpoint!r} reset")
            else:
                saved = load_checkpoint(self.store, opts.checkpoint)
        elif opts.reset_checkpoint:
            raise InvalidInput("--reset-checkpoint needs --checkpoint NAME")
        if saved is not None:
            self._resume(saved)
            return
        if opts.is_log:
            assert self.ledger is not None
            if opts.start == "start":
                self.ledger.origin = None
                self.needs_read = True
            elif isinstance(opts.start, datetime):
                self.ledger.origin = opts.start
                self.needs_read = True
            else:
                self._baseline()
        else:
            self.needs_read = opts.start == "start"
        if opts.checkpoint is not None:
            self._checkpoint_base = {
                "_id": opts.checkpoint,
                "collection": opts.collection,
                "filters": opts.filters(),
                "created_at": utcnow(),
            }
            if opts.is_log:
                assert self.ledger is not None
                window = self.store.db[CHECKPOINT_WINDOW]
                window.delete_many({"c": opts.checkpoint})  # a stale one of a deleted checkpoint
                window.create_index([("c", 1), ("ts", 1)])
                baseline = self.ledger.snapshot()["recent"]
                record_shown(self.store, opts.checkpoint, [(ts, raw) for ts, raw in baseline])
                self._write_checkpoint()

    def _resume(self, saved: dict[str, Any]) -> None:
        opts = self.options
        name = opts.checkpoint
        if saved.get("collection") != opts.collection:
            raise InvalidInput(
                f"checkpoint {name!r} follows {saved.get('collection')!r}, not {opts.collection!r}",
                hint="use another name, or --reset-checkpoint to start it over",
            )
        if (saved.get("filters") or {}) != opts.filters():
            raise InvalidInput(
                f"checkpoint {name!r} was saved with other filters "
                f"({_describe(saved.get('filters'))})",
                hint="give the same --type/--stream/--op, another name, or --reset-checkpoint",
            )
        if opts.start_given:
            self.hooks.notice(
                f"continuing checkpoint {name!r}; --from is ignored "
                "(add --reset-checkpoint to start it over)"
            )
        self._checkpoint_base = {
            k: saved[k] for k in ("_id", "collection", "filters", "created_at") if k in saved
        }
        self.resumed_from = saved.get("updated_at")
        if opts.is_log:
            self.ledger = Ledger.from_snapshot(saved)
            self.needs_read = True
        else:
            self.token = saved.get("token")
            self.position_ts = saved.get("position_ts")

    def _baseline(self) -> None:
        """--from now on the log: remember what is already there near now, shown or not.

        Read before the stream opens, so that a later read (after a lost connection, or from
        a checkpoint) neither shows these nor misses anything committed after the stream opened.
        """
        assert self.ledger is not None
        origin = utcnow() - self.ledger.margin
        self.ledger.origin = origin
        for doc in self._log_since(origin, {"_id": 1, "ts": 1}):
            self.ledger.admit_read(doc)

    # --- the run ---

    def run(self) -> int:
        """Follow until --limit, --idle-timeout, an error, or Ctrl-C; returns changes shown."""
        try:
            with CTRL_C:
                self._run()
        except _Stop:
            self._finish()
            return self.count
        except KeyboardInterrupt:
            self._finish()
            raise
        return self.count

    def _finish(self) -> None:
        """On the way out: the last printed change's save, and a fresh checkpoint document."""
        if self._checkpoint_base is None:
            return
        try:
            if self.dirty:
                self._save()
            if self.ledger is not None and self.saved_since:
                self._write_checkpoint()
        except Exception:  # noqa: BLE001 - best effort: every printed change was saved already
            pass

    def _run(self) -> None:
        self.prepare()
        while True:
            try:
                if self.polling:
                    self._poll_session()
                else:
                    self._stream_session()
            except ConnectionFailure as exc:
                if not self.reached:
                    raise  # never reached: exit 3, as every other command does
                self._ride_out(exc)
            except OperationFailure as exc:
                if exc.code in HISTORY_LOST_CODES:
                    raise self._lost(exc) from None
                if not _retryable(exc):
                    raise
                self._ride_out(exc)

    def _ride_out(self, exc: Exception) -> None:
        """A lost connection or a restarting server: say so once, wait, and try again."""
        now = self.clock()
        if self.outage_since is None:
            self.outage_since = now
            self.failures = 0
            reason = str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0][:160]
            self.hooks.notice(f"lost the connection to the server ({reason}); retrying")
        delay = BACKOFF[min(self.failures, len(BACKOFF) - 1)] * random.uniform(0.8, 1.2)
        self.failures += 1
        self._check_idle(extra=delay)
        self.sleep(delay)
        self._check_idle()

    def _reconnected(self) -> None:
        if self.outage_since is not None:
            seconds = self.clock() - self.outage_since
            self.hooks.notice(f"reconnected after {seconds:.1f} s; continuing where the watch was")
            self.outage_since = None
            self.failures = 0

    def _lost(self, exc: OperationFailure) -> CheckpointLost:
        name = self.options.checkpoint
        what = f"checkpoint {name!r}" if name else "the watch's last position"
        since = f" (saved {self.position_ts:%Y-%m-%d %H:%M:%S} UTC)" if self.position_ts else ""
        return CheckpointLost(
            f"the server can no longer resume {what}{since}: "
            f"{HISTORY_LOST_CODES.get(exc.code or 0, 'history lost')}; changes to "
            f"{self.options.collection!r} since then are no longer in its change history",
            hint=f"start over with --checkpoint {name} --reset-checkpoint --from start to re-read "
            "the collection, or --from now to skip the gap knowingly"
            if name
            else "start again with --from start",
        )

    # --- change streams ---

    def _pipeline(self) -> list[dict[str, Any]]:
        """The filters as the server's $match, letting drop/rename/invalidate through."""
        match = change_match(self.options)
        if not match:
            return []
        if self.store.is_nx27017:
            return NX27017_WATCH_QUIRKS.pipeline(match)
        return [{"$match": {"$or": [match, {"operationType": {"$in": sorted(INVALIDATING_OPS)}}]}}]

    def _open(self) -> Any:
        kwargs: dict[str, Any] = {
            "full_document": "updateLookup",
            "max_await_time_ms": AWAIT_MS,
            "batch_size": 1000,
        }
        if not self.options.is_log and self.token is not None:
            kwargs["resume_after"] = self.token
        return self.collection.watch(self._pipeline(), **kwargs)

    def _stream_session(self) -> None:
        opened_at = utcnow()
        try:
            stream = self._open()
        except OperationFailure as exc:
            if exc.code not in NO_CHANGE_STREAMS_CODES:
                raise
            if not self.options.is_log:
                raise FeatureUnsupported(
                    f"cannot watch {self.options.collection!r}: this server has no change "
                    "streams (a standalone mongod)",
                    hint="run mongod as a replica set, even a single-node one: "
                    "mongod --replSet rs0, then rs.initiate() in mongosh",
                ) from None
            self.polling = True
            self.hooks.notice(
                "this server has no change streams (a standalone mongod): "
                "following the log by polling it"
            )
            self._poll_session()
            return
        self.reached = True
        with stream:
            if self.store.is_nx27017 and not self.seen_existing:
                self.seen_existing = not NX27017_WATCH_QUIRKS.collection_gone(
                    self.store, self.options.collection
                )
            self._reconnected()
            if self.dirty:
                self._save()
            self._announce()
            if self.ledger is not None and (self.needs_read or not self.fresh):
                self.ledger.start_overlap(opened_at)
                self._read_log()
                self.ledger.end_read(utcnow())
            elif self.needs_read:
                self._scan_collection()
            elif self.ledger is None and self.options.checkpoint and self.token is None:
                self.token = stream.resume_token  # a restart continues from here, not "now"
                self._save()
            self.fresh = False
            self.needs_read = False
            self._follow(stream)

    def _announce(self) -> None:
        if not self.fresh:
            return
        opts = self.options
        where = f"{self.store.db.name}.{opts.collection}"
        if self.resumed_from is not None:
            saved = self.resumed_from.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            start = f"checkpoint {opts.checkpoint!r} (saved {saved})"
        elif opts.start == "start":
            start = "the start"
        elif isinstance(opts.start, datetime):
            start = opts.start.astimezone().isoformat(timespec="seconds")
        else:
            start = "now"
        how = "polling the log" if self.polling else "live"
        self.hooks.notice(f"watching {where} from {start}, {how} (Ctrl-C to stop)")

    def _follow(self, stream: Any) -> None:
        """Print the stream's changes as they come; a reader thread fetches the next ones."""
        reader = _Prefetch(stream, self.clock, self.sleep)
        token_saved_at = float("-inf")
        try:
            while True:
                self._check_idle()
                try:
                    item = reader.get(self._wait())
                except queue.Empty:
                    item = _QUIET
                if item is _IDLE or item is _QUIET:
                    # The stream is caught up (or still quiet): housekeeping between changes.
                    now = self.clock()
                    if self.ledger is not None:
                        self.ledger.live_progress(idle=True)
                    self.scan_ids = None
                    self._check_gone(now)
                    if (
                        self.options.checkpoint
                        and not self.options.is_log
                        and now - token_saved_at > 1
                    ):
                        token = reader.token
                        if token is not None and token != self.token:
                            self.token = token
                            self._save()
                        token_saved_at = now
                    continue
                if isinstance(item, BaseException):
                    raise item
                self._handle(item, stream)
        finally:
            reader.close()

    def _wait(self) -> float:
        """How long to wait for the next change before housekeeping (and --idle-timeout)."""
        timeout = self.options.idle_timeout
        if timeout is None:
            return 0.25
        left = timeout - (self.clock() - self.last_change)
        return min(0.25, max(left, 0.001))

    def _handle(self, change: Mapping[str, Any], stream: Any) -> None:
        op = change.get("operationType")
        if op in INVALIDATING_OPS:
            raise self._gone(change)
        if op not in OPS:
            return
        doc = change.get("fullDocument")
        nx = self.store.is_nx27017
        if nx:
            doc = NX27017_WATCH_QUIRKS.full_document(doc)
            key = NX27017_WATCH_QUIRKS.document_key(change, doc)
        else:
            key = dict(change.get("documentKey") or {})
        if op == "delete":
            doc = None
        wall = change.get("wallTime")
        when = wall if isinstance(wall, datetime) else None
        shown = None
        if self.ledger is not None and op == "insert" and doc is not None:
            verdict = self.ledger.admit_live(doc)
            ts = doc.get("ts")
            self.ledger.live_progress(ts=ts if isinstance(ts, datetime) else None)
            if verdict == "seen":
                return
            if verdict == "late" and not self.warned_late:
                self.warned_late = True
                self.hooks.warning(
                    f"event {doc.get('_id')!r} has a ts more than {MARGIN.total_seconds():g} s "
                    "older than events already shown (imported, or a publisher's clock is off); "
                    "it is shown, and may have been shown before"
                )
            when = ts if isinstance(ts, datetime) else when
            if verdict == "new" and self._checkpoint_base is not None:
                shown = (position(doc)[0], doc.get("_id"))
        elif self.scan_ids is not None and op == "insert" and doc is not None:
            seen = self.scan_ids.pop(_doc_hash_key(key), None)
            if seen is not None and seen == _doc_hash(doc):
                return
        self.token = change.get("_id")
        self.position_ts = when or utcnow()
        self._deliver(Change(op, self.options.collection, key, doc, when), shown)

    def _gone(self, change: Mapping[str, Any]) -> CollectionGone:
        name = self.options.collection
        op = change.get("operationType")
        if op == "rename":
            to = (change.get("to") or {}).get("coll")
            return CollectionGone(f"the collection {name!r} was renamed to {to!r}; the watch ends")
        if op == "dropDatabase":
            return CollectionGone(f"the database holding {name!r} was dropped; the watch ends")
        return CollectionGone(f"the collection {name!r} was dropped; the watch ends")

    def _check_gone(self, now: float) -> None:
        """nx-27017 only: a dropped collection sends nothing, so look every few seconds."""
        if now < self.next_gone_check or not self.store.is_nx27017:
            return
        self.next_gone_check = now + 2.0
        if NX27017_WATCH_QUIRKS.collection_gone(self.store, self.options.collection):
            if self.seen_existing:
                raise CollectionGone(
                    f"the collection {self.options.collection!r} was dropped; the watch ends"
                )
        else:
            self.seen_existing = True

    # --- reading what is already there ---

    def _log_since(
        self, lower: datetime | None, projection: dict[str, int] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The log's events (with the filters) at or after `lower`, in log order."""
        query = _log_query(self.options.filters())
        if lower is not None:
            nx = self.store.is_nx27017
            query["ts"] = NX27017_WATCH_QUIRKS.ts_since(lower) if nx else {"$gte": lower}
        cursor = self.store.events.find(query, projection).sort("ts", 1).batch_size(1000)
        with cursor:
            for doc in cursor:
                if lower is None or position(doc)[0] >= lower:
                    yield doc

    def _read_log(self) -> int:
        """Show the log's events not shown yet, in log order; how many (module docstring)."""
        assert self.ledger is not None
        if self.options.ops and "insert" not in self.options.ops:
            return 0
        shown = 0
        for doc in self._log_since(self.ledger.read_from()):
            if self.ledger.admit_read(doc):
                shown += 1
                ts = doc.get("ts")
                when = ts if isinstance(ts, datetime) else None
                change = Change("insert", EVENTS, {"_id": doc.get("_id")}, doc, when)
                entry = (position(doc)[0], doc.get("_id")) if self._checkpoint_base else None
                self._deliver(change, entry)
            self._check_idle()
        return shown

    def _scan_collection(self) -> None:
        """--from start on another collection: its documents as inserts, then live.

        Inserts that the stream also delivers (committed after it opened and read by the scan)
        are dropped while they match what was read, until the stream is first caught up.
        """
        if self.options.ops and "insert" not in self.options.ops:
            return
        query = _log_query(self.options.filters())
        self.scan_ids = {}
        with self.collection.find(query).sort("_id", 1).batch_size(1000) as cursor:
            for doc in cursor:
                key = {"_id": doc.get("_id")}
                self.scan_ids[_doc_hash_key(key)] = _doc_hash(doc)
                self._deliver(Change("insert", self.options.collection, key, doc, None))
                self._check_idle()

    # --- polling (servers without change streams) ---

    def _poll_session(self) -> None:
        assert self.ledger is not None
        self._reconnected()
        if self.dirty:
            self._save()
        self._announce()
        self.fresh = False
        idle_since = self.clock()
        while True:
            self._check_idle()
            shown = self._read_log()
            self.reached = True
            now = self.clock()
            if shown:
                idle_since = now
            else:
                self._check_gone(now)
                self.sleep(poll_pause(now - idle_since))

    # --- showing and saving ---

    def _deliver(self, change: Change, shown: tuple[datetime, Any] | None = None) -> None:
        """Print a change, then save it (a log event: `shown`, its ts and _id) if checkpointing."""
        if shown is not None:
            self.unsaved.append(shown)
        with CTRL_C.held:  # a Ctrl-C now waits until the change is printed and saved
            self.hooks.deliver(change)
            self.count += 1
            self.last_change = self.clock()
            if self.options.checkpoint is not None:
                self.dirty = True
                self._save()
        if self.options.limit is not None and self.count >= self.options.limit:
            raise _Stop

    def _check_idle(self, extra: float = 0.0) -> None:
        timeout = self.options.idle_timeout
        if timeout is not None and self.clock() + extra - self.last_change >= timeout:
            raise _Stop

    def _save(self) -> None:
        """Save what was printed: log events into the window, else the resume token."""
        if self._checkpoint_base is None:
            return
        if self.ledger is not None:
            if self.unsaved:
                record_shown(self.store, self._checkpoint_base["_id"], self.unsaved)
                self.saved_since += len(self.unsaved)
                self.unsaved = []
            self.dirty = False
            if self.saved_since >= max(256, len(self.ledger)) or (
                self.saved_since and self.clock() - self.written_at >= 1.0
            ):
                self._write_checkpoint()
            return
        if self.token is None:
            # Still reading the collection (--from start): a restart reads it again.
            self.dirty = False
            return
        doc = dict(self._checkpoint_base)
        doc["token"] = self.token
        doc["position_ts"] = self.position_ts
        save_checkpoint(self.store, doc)
        self.dirty = False

    def _write_checkpoint(self) -> None:
        """Rewrite a log checkpoint's document, then drop the window ids it now covers.

        Every max(256, window) printed events, or second: amortised, a few bytes per event.
        """
        assert self.ledger is not None and self._checkpoint_base is not None
        snap = self.ledger.snapshot()
        doc = {**self._checkpoint_base, **{k: v for k, v in snap.items() if k != "recent"}}
        save_checkpoint(self.store, doc)
        if snap["settled"] is not None:
            forget_below(self.store, doc["_id"], snap["settled"]["ts"])
        self.saved_since = 0
        self.written_at = self.clock()


def _retryable(exc: OperationFailure) -> bool:
    if exc.code in RETRYABLE_CODES:
        return True
    return bool(
        exc.has_error_label("ResumableChangeStreamError")
        or exc.has_error_label("RetryableWriteError")
    )


def _doc_hash_key(key: Mapping[str, Any]) -> str:
    return json_util.dumps(key.get("_id"))


def _doc_hash(doc: Mapping[str, Any]) -> int:
    return hash(json_util.dumps(doc, sort_keys=True))


def _describe(filters: Any) -> str:
    if not isinstance(filters, Mapping):
        return "none"
    parts = [
        f"--{flag} {', '.join(filters.get(name) or [])}"
        for flag, name in (("type", "types"), ("stream", "streams"), ("op", "ops"))
        if filters.get(name)
    ]
    return "; ".join(parts) or "no filters"


def watch(store: Store, options: WatchOptions, hooks: Hooks) -> int:
    """Follow a collection as `evstream watch` does; returns the number of changes shown."""
    return Watcher(store, options, hooks).run()
