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

from evstream.devserver import details, package_version
from evstream.settings import mask_uri
from evstream.storage import EVENTS, SESSIONS, Store
from evstream.storage import overview as queries
from evstream.storage.delivery import DEAD_LETTERS, dead_letter_counts

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
    hello = queries.hello(store)
    info: dict[str, Any] = {"uri": mask_uri(store.uri)}
    if store.embedded:
        info.update(kind="embedded", product="nx-27017", version=package_version("nx-27017"))
        info["topology"] = "single server on this machine"
        if home is not None:
            info.update(details(home, store.db.name))
    else:
        info["kind"] = "mongodb"
        info["product"] = store.product
        info["version"] = store.server_version
        info["topology"] = topology(hello)
        hosts = [str(h) for h in hello.get("hosts") or []]
        if hosts:
            info["members"] = hosts
        info["atlas"] = is_atlas(store.uri, hosts)
    uptime = queries.uptime(store)
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


# --- what others keep: the projection and the watch checkpoints ---------------------------------


def projection_info(store: Store) -> dict[str, Any]:
    """The sessions projection's last rebuild and lag, as `evstream.projection` reports it."""
    return _optional(
        "evstream.projection", "projection_status", store, lambda v: dict(v) if v else {}
    )


def projections_info(store: Store) -> dict[str, Any]:
    """Every projection (and part) that has a checkpoint: collection, version, last run, lag."""
    return _optional(
        "evstream.projection",
        "projections_status",
        store,
        lambda v: {"items": [dict(item) for item in v or []]},
    )


def checkpoints_info(store: Store) -> dict[str, Any]:
    """The saved watch checkpoints, with age and how far behind the log each is."""
    return _optional(
        "evstream.watching",
        "list_checkpoints",
        store,
        lambda v: {"items": [dict(item) for item in v or []]},
    )


def consumers_info(store: Store) -> dict[str, Any]:
    """Every consumer and projection with its liveness, state and lag (evstream.monitor)."""
    return _optional(
        "evstream.monitor",
        "consumer_rows",
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
    """The whole status as one JSON-ready object (datetimes are BSON dates).

    Per-event figures count events only; documents in `events` that are not events (see
    docs/data-model.md) are counted under `not_events`, with the first few `_id`s.
    """
    now = _aware(now or datetime.now(timezone.utc))
    status: dict[str, Any] = {
        "server": server_info(store, home),
        "database": store.db.name,
        "now": now,
    }
    names = queries.collection_names(store)
    counts: dict[str, Any] = {"estimated": estimate}
    figures = None

    def plan(oldest: datetime | None) -> list[datetime] | None:
        buckets = plan_buckets(oldest, now, max_buckets)
        return None if buckets is None else buckets.boundaries()

    log = store.log_name
    if store.fieldmap.shaped or log != EVENTS:
        status["log"] = store.fieldmap.describe()
    if log not in names:
        counts.update(events=0, streams=0)
        status["types"] = []
    elif estimate:
        counts.update(events=queries.estimated_count(store, log), streams=None)
        status["types"] = None
    else:
        figures = store.log_figures(plan)
        counts.update(events=figures.events, streams=figures.streams)
        status["types"] = figures.types
        if figures.skipped.total:
            status["not_events"] = figures.skipped.as_dict()
    if SESSIONS not in names:
        counts["sessions"] = 0
    elif estimate:
        counts["sessions"] = queries.estimated_count(store, SESSIONS)
    else:
        counts["sessions"] = queries.exact_count(store, SESSIONS)
    status["counts"] = counts
    if figures is None and log in names:
        if store.fieldmap.ts_unit != "date":
            oldest = newest = edges = activity = None  # --estimate: its buckets are dates
        else:
            oldest, newest = store.edge_event(newest=False), store.edge_event(newest=True)
            edges = plan(oldest["ts"] if oldest else None)
            ts = store.fieldmap.ts
            activity = store.bucket_counts(store.events, ts, edges) if edges else None
    elif figures is not None:
        oldest, newest, edges, activity = (
            figures.oldest,
            figures.newest,
            figures.edges,
            figures.activity,
        )
    else:
        oldest = newest = edges = activity = None
    status["oldest"] = oldest
    status["newest"] = newest
    status["projection"] = projection_info(store)
    status["projections"] = projections_info(store)
    status["checkpoints"] = checkpoints_info(store)
    status["consumers"] = consumers_info(store)
    status["dead_letters"] = dead_letter_counts(store) if DEAD_LETTERS in names else {}
    if "evstream_archives" in names:  # where the log starts (docs/lifecycle.md)
        from evstream.archiving import log_starts

        status["log_starts"] = log_starts(store)
    if edges is None or activity is None:
        status["activity"] = None
    else:
        size = (edges[1] - edges[0]) if len(edges) > 1 else timedelta(0)
        status["activity"] = {
            "start": edges[0],
            "end": edges[-1],
            "bucket_seconds": size.total_seconds(),
            "counts": activity,
        }
    return status
