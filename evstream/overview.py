"""The queries behind `evstream status`: what is in the store, gathered into one JSON-ready object.

Every figure comes from one cheap query on real MongoDB: counts by type from one `$group` pass,
streams from a `$group` on `stream` (a DISTINCT_SCAN of the `{stream, version}` index), oldest and
newest event and the activity picture from the `ts` index. `estimate=True` replaces the two
passes over the log by collection metadata, for logs too large to scan on every look.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from evstream.devserver import details, package_version
from evstream.settings import mask_uri
from evstream.storage import EVENTS, SESSIONS, Store

# Bucket sizes for the activity picture, smallest first: the first that fits is used.
NICE_BUCKETS = tuple(
    timedelta(seconds=s)
    for s in (
        *(1, 2, 5, 10, 15, 30),
        *(60 * m for m in (1, 2, 5, 10, 15, 30)),
        *(3600 * h for h in (1, 2, 3, 6, 12)),
        *(86400 * d for d in (1, 2, 7, 14, 30, 91, 365)),
    )
)
DEFAULT_BUCKETS = 48
EDGE_PROJECTION = {"data": 0, "meta": 0}


@dataclass(frozen=True)
class BucketPlan:
    """Equal time buckets, aligned to multiples of their size, covering a window up to `now`."""

    start: datetime
    size: timedelta
    count: int

    @property
    def end(self) -> datetime:
        """The end of the last bucket (exclusive)."""
        return self.start + self.size * self.count

    def boundaries(self) -> list[datetime]:
        """count + 1 bucket edges, from start to end."""
        return [self.start + self.size * i for i in range(self.count + 1)]


def plan_buckets(
    oldest: datetime | None, now: datetime, max_buckets: int = DEFAULT_BUCKETS
) -> BucketPlan | None:
    """The smallest nice bucket size that shows everything from `oldest` to `now` in at most
    `max_buckets` buckets (a log older than the largest size allows is shown up to now)."""
    if oldest is None or max_buckets < 1:
        return None
    oldest, now = _aware(oldest), _aware(now)
    newest_edge = max(now, oldest)
    for size in NICE_BUCKETS:
        start = _floor(oldest, size)
        count = math.floor((newest_edge - start) / size) + 1
        if count <= max_buckets:
            return BucketPlan(start, size, count)
    size = NICE_BUCKETS[-1]
    end = _floor(newest_edge, size) + size
    return BucketPlan(end - size * max_buckets, size, max_buckets)


def _floor(moment: datetime, size: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + size * math.floor((moment - epoch) / size)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# --- the server ----------------------------------------------------------------------------------


def server_info(store: Store, home: Path | None = None) -> dict[str, Any]:
    """Which server this is: the embedded dev store, or MongoDB's version and topology."""
    try:
        hello = store.client.admin.command("hello")
    except OperationFailure:  # MongoDB before 4.4.2 knows it as isMaster
        hello = store.client.admin.command("isMaster")
    info: dict[str, Any] = {"uri": mask_uri(store.uri)}
    if store.embedded:
        info.update(kind="embedded", product="nx-27017", version=package_version("nx-27017"))
        info["topology"] = "single server on this machine"
        if home is not None:
            info.update(details(home))
    else:
        info["kind"] = "mongodb"
        info["product"] = store.product
        info["version"] = store.server_version
        info["topology"] = topology(hello)
        hosts = [str(h) for h in hello.get("hosts") or []]
        if hosts:
            info["members"] = hosts
        info["atlas"] = is_atlas(store.uri, hosts)
    uptime = _uptime(store)
    if uptime is not None:
        info["uptime_seconds"] = uptime
    return info


def topology(hello: dict[str, Any]) -> str:
    """A replica set (by name), a sharded cluster behind mongos, or a standalone server."""
    if hello.get("msg") == "isdbgrid":
        return "sharded cluster (mongos)"
    if hello.get("setName"):
        members = len(hello.get("hosts") or [])
        return f"replica set {hello['setName']} ({members} member{'s' * (members != 1)})"
    return "standalone"


def is_atlas(uri: str, hosts: list[str]) -> bool:
    """Whether the deployment is MongoDB Atlas, judged by its host names."""
    authority = uri.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    names = [*authority.split(","), *hosts]
    return any(".mongodb.net" in name.split(":", 1)[0] for name in names)


def _uptime(store: Store) -> float | None:
    # serverStatus needs the clusterMonitor role on secured deployments: optional.
    try:
        status = store.client.admin.command(
            {"serverStatus": 1, "repl": 0, "metrics": 0, "locks": 0, "wiredTiger": 0}
        )
    except PyMongoError:
        return None
    uptime = status.get("uptime")
    return float(uptime) if isinstance(uptime, (int, float)) else None


# --- the log -------------------------------------------------------------------------------------


def types_count(store: Store) -> list[dict[str, Any]]:
    """Events per type, most frequent first (one `$group` pass over the log)."""
    rows = store.events.aggregate([{"$group": {"_id": "$type", "events": {"$sum": 1}}}])
    found = [{"type": row["_id"], "events": int(row["events"])} for row in rows]
    return sorted(found, key=lambda r: (-r["events"], str(r["type"])))


def streams_count(store: Store) -> int:
    """Distinct streams; MongoDB answers a `$group` on the indexed `stream` from the index."""
    rows = list(store.events.aggregate([{"$group": {"_id": "$stream"}}, {"$count": "streams"}]))
    return int(rows[0]["streams"]) if rows else 0


def edge_event(store: Store, newest: bool) -> dict[str, Any] | None:
    """The oldest (or newest) event by `ts`, without its payload; None for an empty log."""
    direction = -1 if newest else 1
    return store.events.find_one(
        {}, projection=EDGE_PROJECTION, sort=[("ts", direction), ("_id", direction)]
    )


def activity_counts(store: Store, plan: BucketPlan) -> list[int]:
    """Events per bucket of the plan, from the `ts` index."""
    return store.bucket_counts(store.events, "ts", plan.boundaries())


# --- what others keep: the projection and the watch checkpoints ---------------------------------


def projection_info(store: Store) -> dict[str, Any]:
    """The sessions projection's last rebuild and lag, as `evstream.projection` reports it."""
    return _optional(
        "evstream.projection", "projection_status", store, lambda v: dict(v) if v else {}
    )


def checkpoints_info(store: Store) -> dict[str, Any]:
    """The saved watch checkpoints, with age and how far behind the log each is."""
    return _optional(
        "evstream.watching",
        "list_checkpoints",
        store,
        lambda v: {"items": [dict(item) for item in v or []]},
    )


def _optional(
    module: str, function: str, store: Store, shape: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """Call a function of a module that this installation may lack; a failure is reported,
    not raised, so that `status` still shows everything else."""
    import importlib

    try:
        found = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError):
        return {"available": False, "error": f"{module}.{function} is not available"}
    try:
        result = shape(found(store))
    except Exception as exc:  # noqa: BLE001 - status reports a broken part instead of failing
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"available": True, **result}


# --- everything ----------------------------------------------------------------------------------


def gather(
    store: Store,
    *,
    home: Path | None = None,
    estimate: bool = False,
    max_buckets: int = DEFAULT_BUCKETS,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The whole status as one JSON-ready object (datetimes are BSON dates)."""
    now = _aware(now or datetime.now(timezone.utc))
    status: dict[str, Any] = {
        "server": server_info(store, home),
        "database": store.db.name,
        "now": now,
    }
    names = set(store.db.list_collection_names())
    oldest = edge_event(store, newest=False) if EVENTS in names else None
    newest = edge_event(store, newest=True) if EVENTS in names else None
    counts: dict[str, Any] = {"estimated": estimate}
    types: list[dict[str, Any]] | None = None
    if EVENTS not in names:
        counts.update(events=0, streams=0)
        types = []
    elif estimate:
        counts.update(events=store.events.estimated_document_count(), streams=None)
    else:
        types = types_count(store)
        counts["events"] = sum(row["events"] for row in types)
        counts["streams"] = streams_count(store)
    if SESSIONS not in names:
        counts["sessions"] = 0
    elif estimate:
        counts["sessions"] = store.db[SESSIONS].estimated_document_count()
    else:
        counts["sessions"] = store.db[SESSIONS].count_documents({})
    status["counts"] = counts
    status["types"] = types
    status["oldest"] = oldest
    status["newest"] = newest
    status["projection"] = projection_info(store)
    status["checkpoints"] = checkpoints_info(store)
    first_ts = oldest.get("ts") if oldest else None
    plan = plan_buckets(first_ts if isinstance(first_ts, datetime) else None, now, max_buckets)
    if plan is None:
        status["activity"] = None
    else:
        status["activity"] = {
            "start": plan.start,
            "end": plan.end,
            "bucket_seconds": plan.size.total_seconds(),
            "counts": activity_counts(store, plan),
        }
    return status
