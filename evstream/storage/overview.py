"""The queries behind `evstream status` (docs/storage.md, "Status").

Per-event figures count only documents that are events (`evstream.events.event_problem` names
the others); documents that are not are counted apart, with the first few `_id`s, so an
application's own documents in `events` never show as a type named None or an oldest event
`?@?`. On MongoDB each figure is a server query over an index or one `$group` pass;
`Nx27017Store.log_figures` computes them in one scan instead (nx-27017 has no `$not`, and its
`$type` and date comparisons cannot be trusted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymongo.errors import OperationFailure, PyMongoError

from evstream.events import UNSORTED, Skipped, event_problem

if TYPE_CHECKING:
    from evstream.storage.mongo import MongoStore

Doc = dict[str, Any]
# A document event_problem would name, as a MongoDB query: the same fields, the same rules.
NOT_EVENT: Doc = {
    "$or": [
        {"stream": {"$not": {"$type": "string"}}},
        {"stream": ""},
        {"version": {"$not": {"$type": ["int", "long"]}}},
        {"version": {"$lt": 1}},
        {"type": {"$not": {"$type": "string"}}},
        {"ts": {"$not": {"$type": "date"}}},
    ]
}
IS_EVENT: Doc = {"$nor": NOT_EVENT["$or"]}


def not_event_query(fm: Any) -> Doc:
    """NOT_EVENT on a field map's paths (without the version's conditions where it has none)."""
    if not fm.shaped:
        return NOT_EVENT
    rules: list[Doc] = [
        {fm.stream: {"$not": {"$type": "string"}}},
        {fm.stream: ""},
        {fm.type: {"$not": {"$type": "string"}}},
        {fm.ts: {"$not": {"$type": "date" if fm.ts_unit == "date" else "number"}}},
    ]
    if fm.version is not None:
        rules[2:2] = [
            {fm.version: {"$not": {"$type": ["int", "long"]}}},
            {fm.version: {"$lt": 1}},
        ]
    return {"$or": rules}


EDGE_PROJECTION = {"data": 0, "meta": 0}
# Bucket edges for the activity chart, given the oldest event's ts (None: no chart).
Planner = Callable[[datetime | None], list[datetime] | None]


@dataclass
class LogFigures:
    """What `status` shows of the log: events per type, streams, edges, activity, non-events."""

    types: list[dict[str, Any]] = field(default_factory=list)
    streams: int = 0
    oldest: Doc | None = None
    newest: Doc | None = None
    edges: list[datetime] | None = None
    activity: list[int] | None = None
    skipped: Skipped = field(default_factory=Skipped)

    @property
    def events(self) -> int:
        """Events in the log (documents that are events)."""
        return sum(row["events"] for row in self.types)


def sorted_types(counts: Iterable[tuple[Any, int]]) -> list[dict[str, Any]]:
    """Type rows, most frequent first."""
    rows = [{"type": kind, "events": int(n)} for kind, n in counts]
    return sorted(rows, key=lambda r: (-r["events"], str(r["type"])))


class OverviewQueries:
    """MongoStore's status queries, written to MongoDB's documentation."""

    events: Any

    def log_figures(self, plan: Planner) -> LogFigures:
        """Everything status shows of the log, from queries the indexes serve (on a log that
        another application shaped, from one pass over its documents: docs/adopting.md)."""
        events = self.events
        fm = self.fieldmap  # type: ignore[attr-defined]
        if fm.shaped and fm.ts_unit != "date":
            # Epoch numbers: the activity buckets are dates; one pass over the log instead.
            fields = {
                fm.paths()[name]: 1
                for name in ("stream", "version", "type", "ts")
                if name in fm.paths()
            }
            docs = self.canonical_all(  # type: ignore[attr-defined]
                events.find({}, fields).batch_size(10_000)
            )
            return scan_figures(docs, plan, versioned=fm.versioned)
        not_event = not_event_query(fm)
        figures = LogFigures()
        rows = events.aggregate(
            [
                {"$match": {"$nor": not_event["$or"]}},
                {"$group": {"_id": f"${fm.type}", "n": {"$sum": 1}}},
            ]
        )
        figures.types = sorted_types((row["_id"], row["n"]) for row in rows)
        # $gt "" and $gte 1 keep to string streams and numeric versions by type bracketing,
        # so MongoDB still answers the $group from the {stream, version} index.
        streams = list(
            events.aggregate(
                [
                    {
                        "$match": {
                            fm.stream: {"$gt": ""},
                            **({fm.version: {"$gte": 1}} if fm.version else {}),
                        }
                    },
                    {"$group": {"_id": f"${fm.stream}"}},
                    {"$count": "streams"},
                ]
            )
        )
        figures.streams = int(streams[0]["streams"]) if streams else 0
        figures.oldest = self.edge_event(newest=False)
        figures.newest = self.edge_event(newest=True)
        figures.edges = plan(figures.oldest["ts"] if figures.oldest else None)
        if figures.edges is not None:
            figures.activity = self.bucket_counts(events, fm.ts, figures.edges)  # type: ignore[attr-defined]
        not_events = events.count_documents(not_event)
        if not_events:
            for doc in events.find(not_event, {"_id": 1}).limit(Skipped.SAMPLE):
                figures.skipped.sample.append(doc["_id"])
            figures.skipped.counts[UNSORTED] = int(not_events)
        return figures

    def edge_event(self, *, newest: bool) -> Doc | None:
        """The oldest (or newest) event by `ts`, without its payload; ties in storage order.

        Sorting on `ts` alone walks the `{ts: 1}` index (no blocking sort); among equal `ts`
        the index keeps storage order, as `watch --from start` shows them.
        """
        direction = -1 if newest else 1
        fm = self.fieldmap  # type: ignore[attr-defined]
        if not fm.shaped:
            query = {**IS_EVENT, "ts": {"$type": "date"}}
            return self.events.find_one(query, projection=EDGE_PROJECTION, sort=[("ts", direction)])
        query = {"$nor": not_event_query(fm)["$or"], fm.ts: {"$type": "date"}}
        hidden = fm.hidden_payload()
        doc = self.events.find_one(query, projection=hidden, sort=[(fm.ts, direction)])
        return None if doc is None else self.canonical(doc)  # type: ignore[attr-defined]


def scan_figures(
    docs: Iterable[Mapping[str, Any]], plan: Planner, *, versioned: bool = True
) -> LogFigures:
    """The figures from one pass over (stream, version, type, ts) of every document (as
    canonical events): for servers whose queries cannot tell events from other documents, and
    for logs that another application shaped."""
    figures = LogFigures()
    types: dict[Any, int] = {}
    streams: set[str] = set()
    times: dict[datetime, int] = {}
    oldest: Mapping[str, Any] | None = None
    newest: Mapping[str, Any] | None = None
    for doc in docs:
        problem = event_problem(doc, versioned)
        if problem is not None:
            figures.skipped.add(doc, problem)
            continue
        types[doc["type"]] = types.get(doc["type"], 0) + 1
        streams.add(doc["stream"])
        ts = doc["ts"]
        times[ts] = times.get(ts, 0) + 1
        if oldest is None or ts < oldest["ts"]:
            oldest = doc
        if newest is None or ts >= newest["ts"]:
            newest = doc
    figures.types = sorted_types(types.items())
    figures.streams = len(streams)
    figures.oldest = dict(oldest) if oldest else None
    figures.newest = dict(newest) if newest else None
    figures.edges = plan(oldest["ts"] if oldest else None)
    if figures.edges is not None:
        from bisect import bisect_right

        counts = [0] * (len(figures.edges) - 1)
        for ts, n in times.items():
            at = bisect_right(figures.edges, ts) - 1
            if 0 <= at < len(counts):
                counts[at] += n
        figures.activity = counts
    return figures


# --- the server ----------------------------------------------------------------------------------


def hello(store: MongoStore) -> Doc:
    """The server's hello (isMaster before MongoDB 4.4.2)."""
    try:
        return dict(store.client.admin.command("hello"))
    except OperationFailure:
        return dict(store.client.admin.command("isMaster"))


def uptime(store: MongoStore) -> float | None:
    """Seconds since the server started; None where serverStatus is not allowed.

    serverStatus needs the clusterMonitor role on secured deployments: optional.
    """
    try:
        status = store.client.admin.command(
            {"serverStatus": 1, "repl": 0, "metrics": 0, "locks": 0, "wiredTiger": 0}
        )
    except PyMongoError:
        return None
    value = status.get("uptime")
    return float(value) if isinstance(value, (int, float)) else None


def collection_names(store: MongoStore) -> set[str]:
    """The database's collection names."""
    return set(store.db.list_collection_names())


def estimated_count(store: MongoStore, name: str) -> int:
    """A collection's document count from its metadata."""
    return int(store.db[name].estimated_document_count())


def exact_count(store: MongoStore, name: str) -> int:
    """A collection's document count."""
    return store.count(store.db[name], {})
