"""What a field map costs: publish, watch and rebuild on a mapped log against the default shape.

    python benchmarks/bench_fieldmap.py [--events 5000] [--streams 500] [--rounds 3] [--uri URI]

Three logs of the same events, on one server (docs/adopting.md, "What the map costs"):

- default: evstream's own shape (`events`: stream, version, type, data, meta, ts);
- renamed: the same fields under other names (a mongoose model's), with versions and dates;
- app: an application's log (aggregateId, eventType, payload, metadata, createdAt in epoch ms,
  ObjectId ids, no versions), as `[log] version = false` reads it.

For each, in-process, the client CPU (process time) per event of: publish (`publish_events`,
batches of 1,000), watch (`watch --from start --no-follow -o json`: the Watcher with the JSON
line of each change) and a full `rebuild sessions`. The rounds alternate the logs; the table
shows the least CPU of the rounds (the least disturbed on a loaded machine; `--stat median`
for medians) and each mapped log's ratio to the default. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, server  # noqa: E402

from evstream.events import EventInput  # noqa: E402
from evstream.output import json_line, watch_record  # noqa: E402
from evstream.projection import plan_rebuild, rebuild  # noqa: E402
from evstream.projections import builtin_projection  # noqa: E402
from evstream.publishing import publish_events  # noqa: E402
from evstream.settings import Settings  # noqa: E402
from evstream.storage import connect  # noqa: E402
from evstream.watching import Hooks, Watcher, WatchOptions  # noqa: E402

MAPS: dict[str, dict[str, Any] | None] = {
    "default": None,
    "renamed": {
        "collection": "history",
        "stream": "aggregateId",
        "type": "eventType",
        "data": "payload",
        "meta": "metadata",
        "ts": "createdAt",
        "version": "sequence",
    },
    "app": {
        "collection": "domain_events",
        "stream": "aggregateId",
        "type": "eventType",
        "data": "payload",
        "meta": "metadata",
        "ts": "createdAt",
        "ts_unit": "ms",
        "version": False,
    },
}
TYPES = ("session.started", "login", "logout", "profile.updated", "page.viewed")


def events(n: int, streams: int) -> list[EventInput]:
    return [
        EventInput(
            type=TYPES[i % len(TYPES)],
            stream=f"user-{i % streams}",
            data={"username": f"u{i % streams}", "n": i},
            meta={"source": "bench"},
        )
        for i in range(n)
    ]


def cpu(fn: Any) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


def one_round(uri: str, db: str, table: dict[str, Any] | None, n: int, streams: int) -> dict:
    # Without a map, Settings as before there was one: the same script measures another
    # checkout's default path (PYTHONPATH=that checkout, --only default).
    settings = Settings(uri=uri, db=db) if table is None else Settings(uri=uri, db=db, log=table)
    store = connect(settings, lambda m: None)
    try:
        store.db.client.drop_database(db)
        batch = events(n, streams)
        publish = cpu(lambda: publish_events(store, batch))
        shown = []

        def deliver(change: Any) -> None:
            shown.append(json_line(watch_record(change.op, change.collection, change.key,
                                                change.doc)))  # fmt: skip

        options = WatchOptions(start="start", start_given=True, follow=False)
        watch = cpu(lambda: Watcher(store, options, Hooks(deliver=deliver)).run())
        assert len(shown) == n, (len(shown), n)
        sessions = builtin_projection("sessions")
        full = cpu(lambda: rebuild(store, plan_rebuild(store, sessions, incremental=False)))
        store.db.client.drop_database(db)
        return {"publish": publish / n * 1e6, "watch": watch / n * 1e6, "rebuild": full / n * 1e6}
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uri")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=list(MAPS), help="one log only")
    parser.add_argument("--stat", choices=["min", "median"], default="min")
    args = parser.parse_args()
    maps = {args.only: MAPS[args.only]} if args.only else MAPS
    results: dict[str, list[dict[str, float]]] = {name: [] for name in maps}
    with server(args.uri) as uri:
        for name, table in maps.items():  # warm-up: imports and first-use costs stay out
            one_round(uri, f"bench_fieldmap_warm_{name}", table, min(args.events, 500), 50)
        for r in range(args.rounds):
            # Every other round in the reverse order, so no log always runs first.
            order = list(maps.items()) if r % 2 == 0 else list(reversed(maps.items()))
            for name, table in order:
                results[name].append(
                    one_round(uri, f"bench_fieldmap_{r}_{name}", table, args.events, args.streams)
                )
    # The least CPU of the rounds: on a loaded machine the least disturbed one (--stat median
    # for the middle one).
    pick = min if args.stat == "min" else median
    figures = {
        name: {k: pick([row[k] for row in rows]) for k in ("publish", "watch", "rebuild")}
        for name, rows in results.items()
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"client CPU per event (µs), {args.stat} of {args.rounds} rounds, {args.events:,} "
          f"events over {args.streams:,} streams")  # fmt: skip
    print(f"{'log':<10}{'publish':>16}{'watch':>16}{'rebuild':>16}")
    base = figures.get("default")
    for name, row in figures.items():
        cells = []
        for k in ("publish", "watch", "rebuild"):
            ratio = "" if name == "default" or base is None else f" ({row[k] / base[k]:.2f}x)"
            cells.append(f"{row[k]:.1f}{ratio}".rjust(16))
        print(f"{name:<10}{''.join(cells)}")


if __name__ == "__main__":
    main()
