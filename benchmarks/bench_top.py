"""One refresh of `evstream top` on a big log, with 10 consumers (docs/operating.md).

    python benchmarks/bench_top.py [--uri URI] [--db evstream] [--consumers 10] [--refreshes 5]

Against a log that is already there (seed it first, e.g. into your own dev store:
`EVSTREAM_HOME=/tmp/x evstream seed --users 100000 --events-per-user 10`, then pass that
store's URI from `evstream server status`). Writes `--consumers` watch checkpoints named
`bench-top-N` (half of them at the log's newest event, half behind it at spread positions, all
with liveness) and removes them afterwards. Reports, per refresh: the seconds the monitor's
snapshot took (its queries) and the seconds rendering the frame took, first refresh apart
(it also looks up the oldest event), then the median of the rest.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from datetime import datetime, timedelta, timezone

import pymongo
from rich.console import Console

from evstream.liveness import Pulse
from evstream.monitor import Monitor
from evstream.settings import Settings
from evstream.storage import connect
from evstream.top_view import top_view

PREFIX = "bench-top-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--db", default="evstream")
    parser.add_argument("--consumers", type=int, default=10)
    parser.add_argument("--refreshes", type=int, default=5)
    args = parser.parse_args()
    store = connect(Settings(uri=args.uri, db=args.db), lambda message: None)
    raw = pymongo.MongoClient(args.uri)[args.db]
    newest = raw.events.find_one({}, {"ts": 1}, sort=[("ts", -1)])
    oldest = raw.events.find_one({}, {"ts": 1}, sort=[("ts", 1)])
    if newest is None or oldest is None:
        raise SystemExit("the log is empty: seed it first")
    span = newest["ts"] - oldest["ts"]
    pulse = Pulse("watch")
    try:
        for n in range(args.consumers):
            behind = n % 2 == 1
            ts = newest["ts"] - span * (n / (2 * args.consumers)) if behind else newest["ts"]
            ident = None if behind else newest["_id"]
            pulse.handled = 1000 * n
            raw.evstream_checkpoints.replace_one(
                {"_id": f"{PREFIX}{n}"},
                {
                    "_id": f"{PREFIX}{n}",
                    "collection": "events",
                    "filters": {"types": [], "streams": [], "ops": []},
                    "created_at": datetime.now(timezone.utc),
                    "settled": None,
                    "position": {"ts": ts, "id": ident},
                    "origin": None,
                    "updated_at": datetime.now(timezone.utc),
                    "liveness": pulse.record(),
                },
                upsert=True,
            )
        monitor = Monitor(store)
        snaps, renders = [], []
        for _ in range(args.refreshes):
            started = time.perf_counter()
            snapshot = monitor.snapshot()
            snaps.append(time.perf_counter() - started)
            started = time.perf_counter()
            Console(file=io.StringIO(), width=160, force_terminal=True).print(
                top_view(snapshot, interval=1.0)
            )
            renders.append(time.perf_counter() - started)
        mine = [r for r in snapshot["consumers"] if str(r["name"]).startswith(PREFIX)]
        estimated = sum(1 for r in mine if r["lag_estimated"])
        print(
            f"log: {snapshot['log']['events']:,} documents, span {span / timedelta(hours=1):.1f} h"
        )
        print(f"consumers: {len(mine)} ({estimated} with an estimated lag)")
        print(f"first refresh: snapshot {snaps[0]:.3f} s, render {renders[0]:.3f} s")
        if len(snaps) > 1:
            snap, render = statistics.median(snaps[1:]), statistics.median(renders[1:])
            print(
                f"later refreshes (median of {len(snaps) - 1}): snapshot {snap:.3f} s, "
                f"render {render:.3f} s"
            )
    finally:
        raw.evstream_checkpoints.delete_many({"_id": {"$regex": f"^{PREFIX}"}})
        store.close()


if __name__ == "__main__":
    main()
