"""The nx-27017 adapter: every workaround for that server, here and only here.

See docs/storage.md, "nx-27017".

nx-27017 is the MongoDB wire-protocol server over SQLite behind the embedded dev store. It is
told apart from MongoDB once, at connect, by a positive sign (its buildInfo names its process
`nx_27017`), never by a failure: a MongoDB in an election must not get these workarounds.
Each override below says which quirk it works around.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar

from bson import Decimal128, MaxKey, MinKey, ObjectId, Regex, Timestamp, json_util
from pymongo.client_session import ClientSession
from pymongo.collection import Collection

from evstream.events import EventInput, event_problem
from evstream.storage.codec import aware, id_key
from evstream.storage.mongo import Doc, MongoStore
from evstream.storage.overview import EDGE_PROJECTION, LogFigures, Planner, scan_figures

PROCESS_NAMES = ("nx_27017", "nx-27017")
# Documents looked at, newest (or oldest) by ts first, for the log's edge event.
EDGE_LOOK = 100


def is_nx27017(build_info: Mapping[str, Any]) -> bool:
    """Whether a buildInfo reply is nx-27017's: it names its process; MongoDB's does not."""
    return str(build_info.get("process", "")).lower() in PROCESS_NAMES


def no_authentication(exc: KeyError) -> bool:
    """nx-27017 has no authentication: it answers saslStart like any unknown command, {ok: 1}
    without a payload, and pymongo's SCRAM code fails on that with KeyError('payload')."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return exc.args == ("payload",) and "pymongo" in where and where.endswith("auth.py")


class Nx27017Store(MongoStore):
    """MongoStore with nx-27017's quirks worked around."""

    product: ClassVar[str] = "nx-27017"
    # nx-27017 applies a find's projection in Python after decoding the whole document: a
    # sorted read of 30,000 events took 1.5 s with five fields and 1.0 s for whole documents.
    # So `check` reads whole documents, and rebuild's reads of a mapped log translate them in
    # Python (`MongoStore.read_events`): canonical names asked of it took 0.5 s instead of 0.2 s
    # for 4,000 events, to save about 1 µs of client CPU per event.
    cheap_projection: ClassVar[bool] = False

    @property
    def server_version(self) -> str | None:
        """nx-27017 reports a MongoDB version it imitates, not its own: none is given."""
        return None

    # --- publishing ------------------------------------------------------------------------

    # Input text without these cannot hold a value nx-27017 refuses: NaN and Infinity are JSON
    # literals to Python's parser, the bson types come from Extended JSON ({"$numberDecimal": …}).
    UNSTORABLE_TYPES: ClassVar[dict[type, str]] = {
        Decimal128: "a Decimal128",
        Regex: "a regular expression",
        Timestamp: "a Timestamp",
        MinKey: "MinKey",
        MaxKey: "MaxKey",
    }

    def unstorable(self, event: EventInput, text: str | None = None) -> str | None:
        """nx-27017 keeps documents as JSON: it refuses NaN and ±Infinity, Decimal128, regular
        expressions, Timestamps and MinKey/MaxKey (MongoDB stores them all), failing the insert
        with code 8. Found before writing, such an event is a bad input line like any other."""
        if text is not None and '"$' not in text and "NaN" not in text and "Infinity" not in text:
            # Only Extended JSON, NaN or Infinity can hold such a value: the common line is let
            # through in three scans of its text.
            return None
        for where, value in (("data", event.data), ("meta", event.meta)):
            found = self._unstorable_in(value, where)
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

    def not_events_cursor(self, query: Doc, fields: Doc) -> Iterable[Doc]:
        """nx-27017 has no `$not` and its `$type` does not know dates: every document of the
        query is read (only its checked fields), and the caller's `event_problem` picks."""
        return self.events.find(query, fields).sort(self.stream_sort()).batch_size(10_000)

    def heads_pipeline(self, streams: list[str]) -> list[Doc]:
        """nx-27017 runs $sort+$group/$first in Python (~1 s per 1,000 streams); $max is SQL."""
        stream, version = self.fieldmap.stream, self.fieldmap.version
        return [
            {"$match": {stream: {"$in": streams}}},
            {"$group": {"_id": f"${stream}", "version": {"$max": f"${version}"}}},
        ]

    # --- counting and status ----------------------------------------------------------------

    def count(self, collection: Collection[Doc], query: Doc) -> int:
        """count_documents runs in Python on nx-27017 (~35,000 documents/s); `count` is SQL.

        nx-27017's `find` and `count` also compare dates at whole seconds (count_documents is
        exact), so `count` agrees with `find` on a date range there, which callers may rely on.
        """
        reply = collection.database.command("count", collection.name, query=query)
        return int(reply["n"])

    def log_figures(self, plan: Planner) -> LogFigures:
        """Status's figures from one scan: nx-27017 has no `$not`, its `$type` does not know
        dates, and a string stored where a date belongs matches date comparisons, so its
        queries cannot tell events from other documents."""
        fm = self.fieldmap
        fields = {
            fm.paths()[name]: 1
            for name in ("stream", "version", "type", "ts")
            if name in fm.paths()
        }
        docs = self.canonical_all(self.events.find({}, fields).batch_size(10_000))
        return scan_figures(docs, plan, versioned=fm.versioned)

    def edge_event(self, *, newest: bool) -> Doc | None:
        """The oldest (or newest) event: the first document by `ts` that is an event, looked
        for here (nx-27017 sorts string dates among real ones and cannot filter them out).

        A sort without a limit sorts the whole log there (a minute at 1,000,000 events); one
        with a limit answers at once: the first EDGE_LOOK documents, then, only when none of
        them is an event, all of them."""
        fm = self.fieldmap
        hidden = fm.hidden_payload() if fm.shaped else EDGE_PROJECTION
        for limit in (EDGE_LOOK, 0):
            cursor = self.events.find({}, hidden).sort(fm.ts, -1 if newest else 1).limit(limit)
            with cursor.batch_size(EDGE_LOOK) as docs:
                events = self.canonical_all(docs)
                found = next(
                    (doc for doc in events if event_problem(doc, fm.versioned) is None), None
                )
            if found is not None or limit == 0:
                return found
        return None

    def bucket_counts(
        self, collection: Collection[Doc], path: str, edges: list[datetime]
    ) -> list[int]:
        """Documents per date range [edges[i], edges[i+1]).

        nx-27017 answers `$bucket` on dates with no buckets at all, has no date arithmetic,
        compares dates wrongly in an aggregation's `$match` (`$gte` always true, `$lt` always
        false), and a range count per bucket is a full scan each: group the whole collection by
        the exact date in one pass (its `$group` keys come back as `{"$date": …}` strings) and
        bucket the groups here.
        """
        counts = [0] * (len(edges) - 1)
        for row in collection.aggregate([{"$group": {"_id": f"${path}", "n": {"$sum": 1}}}]):
            key = row["_id"]
            if isinstance(key, str):
                try:
                    key = json_util.loads(key)
                except (ValueError, TypeError):
                    continue
            if not isinstance(key, datetime):
                continue
            if key.tzinfo is None:
                key = key.replace(tzinfo=timezone.utc)
            at = bisect_right(edges, key) - 1
            if 0 <= at < len(counts):
                counts[at] += int(row["n"])
        return counts

    # --- projections ------------------------------------------------------------------------

    def checkpoint_time(self, moment: datetime) -> datetime:
        """nx-27017 compares dates at whole seconds in `find` and `count` (`$gt` on a date skips
        the rest of that second): on a whole second, `$lt` and `$gte` are exact again."""
        return moment.replace(microsecond=0)

    # --- watching ---------------------------------------------------------------------------
    # nx-27017's change streams and date comparisons, worked around here and only here
    # (docs/handover.md, "nx-27017").

    # Change history is kept only while a stream is open: nx-27017 records changes with triggers
    # that exist while some change stream on the collection is open (closing the last one, as a
    # clean shutdown does, drops them). What is written on the restarted server before a stream
    # opens again may never be recorded, so a stream that pymongo resumed by itself from its old
    # token can silently miss it (docs/storage.md, "Lost connections").
    driver_resume_is_exact: ClassVar[bool] = False

    def watch_pipeline(self, match: Doc, keep_ops: Iterable[str]) -> list[Doc]:
        """Its change-stream $match knows field conditions only ($or matches nothing), and it
        sends no drop/invalidate events to let through: the filters alone."""
        return [{"$match": match}] if match else []

    def change_document(self, change: Mapping[str, Any]) -> Doc | None:
        """`fullDocument` comes as decoded JSON: dates as {"$date": …} and ObjectIds as
        {"__neosqlite_objectid__": true, "id": …}; restored to BSON types (in place)."""
        doc = change.get("fullDocument")
        return _restored(doc) if isinstance(doc, dict) else None

    def change_key(self, change: Mapping[str, Any], doc: Doc | None) -> Doc:
        """`documentKey._id` is right for strings and ObjectIds only: the full document's _id
        where there is one."""
        key = dict(change.get("documentKey") or {})
        if doc is not None and "_id" in doc:
            key["_id"] = doc["_id"]
        return key

    def change_time(self, change: Mapping[str, Any]) -> Timestamp | None:
        """`clusterTime` is the datetime of the read, not a commit time: none."""
        return None

    def token_time(self, token: Any) -> Timestamp | None:
        """Its tokens (`nx:N`) carry no time: none. The handover ends on an empty answer to a
        getMore sent after the read instead, which is exact there: getMore answers at once."""
        return None

    def log_session(self) -> ClientSession | None:
        """No reply carries `operationTime`: a session would tell nothing."""
        return None

    def ts_since(self, lower: datetime) -> Doc:
        """Dates compare at whole seconds ({ts: {$gte: T}} matches all of T's second, $gt skips
        the rest of it): ask for the whole second; readers re-check `ts >= T` themselves.
        A ts kept as epoch ms or s is a number, compared exactly."""
        if self.fieldmap.ts_unit != "date":
            return super().ts_since(lower)
        return {"$gte": _second(lower)}

    def ts_before(self, upper: datetime) -> Doc:
        """Below the start of `upper`'s second: exact at whole-second comparisons."""
        return {"$lt": _second(upper)}

    def ids_matching(self, collection: str, path: str, values: list[Any]) -> list[Any]:
        """A query on an ObjectId in a field other than `_id` matches nothing (and an `$in`
        holding one errors): ObjectIds are compared here, over the collection's documents (the
        own, small collections an erase looks in)."""
        oids = {v for v in values if isinstance(v, ObjectId)}
        plain = [v for v in values if not isinstance(v, ObjectId)]
        found = super().ids_matching(collection, path, plain)
        if oids:
            for doc in self.db[collection].find({}):
                value: Any = doc
                for part in path.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                value = _restored(value)
                if isinstance(value, ObjectId) and value in oids and doc["_id"] not in found:
                    found.append(doc["_id"])
        return found

    def collection_gone(self, name: str) -> bool:
        """A drop produces no invalidate event: ask whether it still exists (its
        list_collection_names ignores the filter and lists every collection)."""
        return name not in self.db.list_collection_names()

    def collection_exists(self, name: str) -> bool:
        """list_collection_names ignores its filter there: look through them all."""
        return name in self.db.list_collection_names()

    def document_key_fields(self, name: str) -> tuple[str, ...]:
        """No sharding (and reading `config` would create that database): `_id`."""
        return ("_id",)

    def count_log_after(
        self, query: Doc, ts: datetime | None, ident: Any, *, inclusive: bool
    ) -> int:
        """No $gt on dates, and counting runs in Python after an aggregation there: fetch
        (_id, ts) from ts's second on and compare here, which is faster."""
        if ts is None:
            return self.count(self.events, query)
        fm = self.fieldmap
        query[fm.ts] = self.ts_since(ts)
        after = (ts, id_key(ident))
        found = self.events.find(query, {"_id": 1, fm.ts: 1}).batch_size(10_000)
        total = 0
        for doc in self.canonical_all(found):
            at = doc.get("ts")
            if not isinstance(at, datetime):
                continue
            at = aware(at)
            if (at >= ts) if inclusive else ((at, id_key(doc.get("_id"))) > after):
                total += 1
        return total

    # Up to this many log documents, counting what lies after a position (a scan there) is
    # cheap enough for a live view's refresh; above it, lags are estimated (docs/operating.md).
    SCAN_FOR_LAG_MAX: ClassVar[int] = 20_000

    def log_size(self) -> int:
        """estimated_document_count takes ~1 µs per document there; the `count` command is SQL
        and ten times faster."""
        return self.count(self.events, {})

    def count_log_after_capped(
        self, query: Doc, ts: datetime, ident: Any, cap: int, *, size: int | None = None
    ) -> int | None:
        """Nothing is index-served there: an exact count is a scan of the whole log, done only
        while the log is small."""
        if (self.log_size() if size is None else size) > self.SCAN_FOR_LAG_MAX:
            return None
        return min(cap, self.count_log_after(query, ts, ident, inclusive=False))

    def inserted_since(self, marker: Any, limit: int) -> tuple[list[Doc], Any, bool]:
        """A $natural sort is ignored there (documents come in storage order either way), so
        what was inserted last cannot be asked for: none (only `--poll` on the dev store,
        which has change streams, follows by polling there)."""
        return [], None, True


def _second(when: datetime) -> datetime:
    return aware(when).replace(microsecond=0)


def _restored(value: Any) -> Any:
    """nx-27017's decoded JSON with its dates and ObjectIds as BSON types again (in place)."""
    if type(value) is dict:
        if len(value) == 1 and "$date" in value:
            return _date(value["$date"], value)
        if value.get("__neosqlite_objectid__") is True and isinstance(value.get("id"), str):
            try:
                return ObjectId(value["id"])
            except Exception:  # noqa: BLE001 - not an ObjectId after all: leave as is
                return value
        for k, v in value.items():
            if type(v) is dict or type(v) is list:
                value[k] = _restored(v)
    elif type(value) is list:
        for i, v in enumerate(value):
            if type(v) is dict or type(v) is list:
                value[i] = _restored(v)
    return value


def _date(raw: Any, original: Any) -> Any:
    try:
        if isinstance(raw, str):
            text = raw[:-1] + "+00:00" if raw.endswith("Z") else raw
            return aware(datetime.fromisoformat(text))
        value = json_util.loads(json.dumps({"$date": raw}))
        return aware(value) if isinstance(value, datetime) else original
    except (ValueError, TypeError, OverflowError):
        return original
