"""`evstream bench`: evstream's workloads against raw pymongo doing the same work, on one server.

Each workload runs in scratch databases on the configured server, dropped afterwards unless
kept. The raw baseline runs in the same process and the same run, so the ratio is what carries
over from one deployment to another, not the absolute figures.
"""

from __future__ import annotations

import io
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evstream.settings import Settings
from evstream.store import Store, connect, ensure_indexes, now_utc

WORKLOADS = ("publish", "rebuild", "watch")
TYPES = ("login", "logout", "profile.updated", "page.viewed")
Progress = Callable[[str], None]


@dataclass
class BenchResult:
    """One workload's figures: evstream against the raw baseline."""

    workload: str
    events: int
    evstream_seconds: float
    raw_seconds: float
    raw_label: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """evstream's time over the raw time (lower is better; 1.0 is parity)."""
        return self.evstream_seconds / self.raw_seconds if self.raw_seconds else float("inf")

    @property
    def events_per_second(self) -> float:
        """evstream's throughput."""
        return self.events / self.evstream_seconds if self.evstream_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready object."""
        return {
            "workload": self.workload,
            "events": self.events,
            "evstream_seconds": round(self.evstream_seconds, 4),
            "raw_seconds": round(self.raw_seconds, 4),
            "ratio": round(self.ratio, 3),
            "events_per_second": round(self.events_per_second, 1),
            "raw": self.raw_label,
            **self.extra,
        }


class Scratch:
    """Scratch databases on the configured server, dropped at the end unless kept."""

    def __init__(self, settings: Settings, keep: bool) -> None:
        self.settings = settings
        self.keep = keep
        self.run = uuid.uuid4().hex[:8]
        self.stores: list[Store] = []

    def store(self, name: str) -> Store:
        """A connection to a fresh scratch database, `evstream_bench_<run>_<name>`."""
        db = f"evstream_bench_{self.run}_{name}"[:63]
        store = connect(
            Settings(uri=self.settings.uri, db=db, home=self.settings.home), lambda m: None
        )
        store.client.drop_database(db)
        self.stores.append(store)
        return store

    def close(self) -> None:
        """Drop (unless kept) and disconnect."""
        for store in self.stores:
            if not self.keep:
                store.client.drop_database(store.db.name)
            store.close()


def synthetic_lines(events: int, streams: int, seed: int = 1) -> bytes:
    """NDJSON events interleaved across streams, as a live system writes them."""
    rng = random.Random(seed)
    out = io.StringIO()
    for i in range(events):
        stream = f"user-{rng.randrange(streams):06d}"
        data = {"username": stream, "path": rng.choice(("/", "/docs", "/pricing")), "n": i}
        out.write(json.dumps({"type": rng.choice(TYPES), "stream": stream, "data": data}) + "\n")
    return out.getvalue().encode()


def documents_for(lines: bytes) -> list[dict[str, Any]]:
    """The documents evstream stores for `lines`, built ahead of the raw baseline's timed insert."""
    from evstream.events import new_event_id

    heads: dict[str, int] = {}
    ts = now_utc()
    docs = []
    for line in lines.splitlines():
        row = json.loads(line)
        heads[row["stream"]] = version = heads.get(row["stream"], 0) + 1
        docs.append(
            {
                "_id": new_event_id(),
                "stream": row["stream"],
                "version": version,
                "type": row["type"],
                "data": row["data"],
                "ts": ts,
            }
        )
    return docs


def bench_publish(scratch: Scratch, events: int, streams: int, progress: Progress) -> BenchResult:
    """Bulk publish of NDJSON against insert_many of the same documents in batches of 1,000."""
    from evstream.publishing import publish_stream

    lines = synthetic_lines(events, streams)
    progress("publish: raw insert_many")
    raw_store = scratch.store("publish_raw")
    raw_store.events.create_index([("stream", 1), ("version", 1)], unique=True)
    docs = documents_for(lines)
    started = time.perf_counter()
    for i in range(0, len(docs), 1000):
        raw_store.events.insert_many(docs[i : i + 1000], ordered=True)
    raw = time.perf_counter() - started

    progress("publish: evstream")
    store = scratch.store("publish")
    ensure_indexes(store)
    started = time.perf_counter()
    report = publish_stream(store, io.BytesIO(lines))
    took = time.perf_counter() - started
    if report.published != events:
        raise RuntimeError(f"publish stored {report.published} of {events} events")
    return BenchResult("publish", events, took, raw, "insert_many, batches of 1,000")


RUNNERS: dict[str, Callable[[Scratch, int, int, Progress], BenchResult]] = {
    "publish": bench_publish,
}


def run(
    settings: Settings,
    workloads: list[str],
    events: int,
    streams: int,
    keep: bool,
    progress: Progress,
    rounds: int = 1,
) -> list[BenchResult]:
    """Run each workload `rounds` times in scratch databases; the median round of each."""
    results = []
    for name in workloads:
        runs = []
        for i in range(rounds):
            scratch = Scratch(settings, keep)
            try:
                runs.append(
                    RUNNERS[name](
                        scratch,
                        events,
                        streams,
                        lambda s, i=i: progress(f"{s} (round {i + 1}/{rounds})"),
                    )
                )
            finally:
                scratch.close()
        results.append(median_result(runs))
    return results


def median_result(runs: list[BenchResult]) -> BenchResult:
    """The median of several rounds: median evstream time and median raw time."""

    def mid(values: list[float]) -> float:
        ordered = sorted(values)
        n = len(ordered)
        return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2

    first = runs[0]
    extra = dict(first.extra)
    if len(runs) > 1:
        extra["rounds"] = len(runs)
    return BenchResult(
        first.workload,
        first.events,
        mid([r.evstream_seconds for r in runs]),
        mid([r.raw_seconds for r in runs]),
        first.raw_label,
        extra,
    )
