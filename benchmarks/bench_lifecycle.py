"""`evstream archive` against a raw find → gzip → delete_many, and `evstream erase` of one stream.

    python benchmarks/bench_lifecycle.py [--events 1000000] [--share 0.3] [--uri URI]

On one server, two identical logs of --events events (--versions events per stream, default 10,
spread in time so that the oldest --share of the log is each stream's first versions):

- raw: `find({ts: {$lt: cut}})` → one JSON line per event (evstream's own encoder) into a gzip
  file → `delete_many({ts: {$lt: cut}})`, in-process. Nothing verified, no snapshot.
- archive: `evstream.archiving.archive` of the same events into a .gz file, in-process: the
  (stream, version)-ordered read (fetched a batch ahead), the sessions snapshots (a thousand
  streams to a record), the fsync, the read back, the delete by id. The target is at most 1.3x
  the raw time.
- erase: `evstream.erasing.erase_streams` of one stream of the remaining log (sessions rebuilt
  first, so there is a projection document to delete too).

Where EVSTREAM_TEST_URI (or --uri) is a real MongoDB, the erase's find on `stream` must be served
by an index: the script asserts it with `explain` (nx-27017 serves nothing from indexes).
Prints a JSON object of figures; the timings are not asserted.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import server  # noqa: E402

from evstream.archiving import archive  # noqa: E402
from evstream.erasing import erase_streams  # noqa: E402
from evstream.projection import plan_rebuild, rebuild  # noqa: E402
from evstream.projections import builtin_projection  # noqa: E402
from evstream.settings import Settings  # noqa: E402
from evstream.storage import connect, ensure_indexes  # noqa: E402
from evstream.storage.lifecycle import explain_stream_delete  # noqa: E402
from evstream.writer import json_line  # noqa: E402

VERSIONS = 10  # per stream, unless --versions
BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
TYPES = ("session.started", "login", "page.viewed", "login", "logout")


def generate(store: Any, events: int, versions: int = VERSIONS) -> None:
    """`events` events over events/versions streams; version v of every stream lies in one
    stretch of time."""
    streams = max(events // versions, 1)
    batch: list[dict[str, Any]] = []
    for v in range(1, versions + 1):
        for s in range(streams):
            batch.append(
                {
                    "_id": f"e{v:04d}-{s:07d}",
                    "stream": f"user-{s:07d}",
                    "version": v,
                    "type": TYPES[(v - 1) % len(TYPES)],
                    "data": {"username": f"user-{s}", "n": v},
                    "ts": BASE + timedelta(milliseconds=(v * streams + s) * 10),
                }
            )
            if len(batch) == 5000:
                store.events.insert_many(batch, ordered=False)
                batch = []
    if batch:
        store.events.insert_many(batch, ordered=False)


def raw_archive(store: Any, cut: datetime, path: Path) -> int:
    """find → gzip → delete_many: the least an archive can do."""
    n = 0
    with gzip.open(path, "wb") as out:
        for doc in store.events.find({"ts": {"$lt": cut}}).batch_size(2000):
            out.write((json_line(doc) + "\n").encode("utf-8"))
            n += 1
    store.events.delete_many({"ts": {"$lt": cut}})
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--share", type=float, default=0.3)
    parser.add_argument("--versions", type=int, default=VERSIONS, help="events per stream")
    parser.add_argument("--uri", default=os.environ.get("EVSTREAM_TEST_URI"))
    args = parser.parse_args()
    streams = max(args.events // args.versions, 1)
    edge_version = max(int(args.versions * args.share), 1) + 1  # versions below it move
    cut = BASE + timedelta(milliseconds=edge_version * streams * 10)
    figures: dict[str, Any] = {"events": args.events, "streams": streams, "versions": args.versions}
    with server(args.uri) as uri, tempfile.TemporaryDirectory(prefix="evs-bench-life-") as tmp:
        stores = []
        for name in ("bench_life_raw", "bench_life_archive"):
            store = connect(Settings(uri=uri, db=name), lambda m: None)
            store.client.drop_database(name)
            ensure_indexes(store)
            started = time.perf_counter()
            generate(store, args.events, args.versions)
            figures[f"generate_{name}_s"] = round(time.perf_counter() - started, 1)
            stores.append(store)
        raw, arch = stores

        started = time.perf_counter()
        moved = raw_archive(raw, cut, Path(tmp) / "raw.ndjson.gz")
        raw_s = time.perf_counter() - started

        started = time.perf_counter()
        report = archive(
            arch,
            before=cut,
            path=str(Path(tmp) / "archive.ndjson.gz"),
            streams=None,
            projections=[builtin_projection("sessions")],
        )
        archive_s = time.perf_counter() - started
        assert report.events == moved == report.deleted, (report.events, moved)
        figures.update(
            moved=moved,
            raw_s=round(raw_s, 2),
            raw_events_per_s=round(moved / raw_s),
            archive_s=round(archive_s, 2),
            archive_events_per_s=round(moved / archive_s),
            archive_vs_raw=round(archive_s / raw_s, 2),
        )

        rebuild(arch, plan_rebuild(arch, builtin_projection("sessions"), incremental=False))
        victim = f"user-{streams // 2:07d}"
        started = time.perf_counter()
        erased = erase_streams(arch, [victim])
        figures["erase_one_stream_s"] = round(time.perf_counter() - started, 3)
        figures["erase_removed"] = erased["streams"][0]["removed"]
        plan = explain_stream_delete(arch, victim)
        winning = json.dumps(plan.get("queryPlanner", {}).get("winningPlan", {}))
        figures["erase_plan"] = "IXSCAN" if "IXSCAN" in winning else winning[:200] or "none"
        if args.uri and arch.product == "MongoDB" and not arch.embedded:
            assert "IXSCAN" in winning and "COLLSCAN" not in winning, winning
        for store in stores:
            store.client.drop_database(store.db.name)
            store.close()
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
