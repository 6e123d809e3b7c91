"""`evstream rebuild` of a projection that declares 2 of the log's 6 event types.

    python benchmarks/bench_projection.py [--events 300000] [--streams 30000] [--rounds 3]
                                          [--parts 4] [--uri URI]

On one server, in the same run:

- limit: one scan of only the 2 types' events sorted by (stream, version), the same fold in
  plain Python, insert_many of every document into an empty collection; in-process.
- rebuild: a full rebuild of the projection into an empty collection (plan_rebuild + rebuild,
  in-process). Limit and rebuild alternate for --rounds rounds; medians are shown.
- parts: --parts processes `evstream rebuild bench_carts --partition I/N` started together,
  against one whole `evstream rebuild bench_carts` process (wall time, start-up included), each
  into an empty collection.

Events are generated with raw insert_many, interleaved across streams, the 6 types equally
often. Prints figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pymongo

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, server  # noqa: E402

from evstream.projection import plan_rebuild, rebuild  # noqa: E402
from evstream.projections import load_projection  # noqa: E402
from evstream.settings import Settings  # noqa: E402
from evstream.storage import connect, ensure_indexes  # noqa: E402

TYPES = ("cart.created", "cart.item_added", "page.viewed", "search", "login", "logout")
DECLARED = TYPES[:2]
MODULE = """
from evstream.projections import Projection

bench_carts = Projection(name="bench_carts", collection="bench_carts", version=1,
                         types=["cart.created", "cart.item_added"],
                         initial={"owner": None, "items": 0, "total": 0})

@bench_carts.on("cart.created")
def _(state, event):
    state["owner"] = event["data"].get("owner")

@bench_carts.on("cart.item_added")
def _(state, event):
    state["items"] += 1
    state["total"] += event["data"]["price"]
"""


def generate(db: Any, events: int, streams: int) -> float:
    """Append the log with insert_many; returns events/s."""
    rng = random.Random(1)
    heads: dict[str, int] = {}
    base = datetime.now(timezone.utc) - timedelta(hours=1)
    step = timedelta(hours=1) / events
    batch: list[dict[str, Any]] = []
    began = time.perf_counter()
    for i in range(events):
        stream = f"cart-{i % streams:06d}"
        heads[stream] = version = heads.get(stream, 0) + 1
        batch.append(
            {
                "_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "stream": stream,
                "version": version,
                "type": TYPES[rng.randrange(6)],
                "data": {"owner": stream, "price": i % 50, "path": "/cart"},
                "meta": {"source": "bench"},
                "ts": base + step * i,
            }
        )
        if len(batch) == 1000:
            db.events.insert_many(batch, ordered=False)
            batch = []
    if batch:
        db.events.insert_many(batch, ordered=False)
    return events / (time.perf_counter() - began)


def limit(db: Any) -> float:
    """Seconds for the floor: scan of the 2 types sorted, the fold, insert_many."""
    db.drop_collection("limit_carts")
    began = time.perf_counter()
    docs: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    cursor = (
        db.events.find({"type": {"$in": list(DECLARED)}})
        .sort([("stream", 1), ("version", 1)])
        .batch_size(2000)
    )
    for e in cursor:
        if current is None or current["_id"] != e["stream"]:
            if current is not None:
                docs.append(current)
            current = {"_id": e["stream"], "owner": None, "items": 0, "total": 0, "events": 0}
        if e["type"] == "cart.created":
            current["owner"] = e["data"].get("owner")
        else:
            current["items"] += 1
            current["total"] += e["data"]["price"]
        current.update(version=e["version"], updated_at=e["ts"])
        current["events"] += 1
        if len(docs) >= 5000:
            db.limit_carts.insert_many(docs, ordered=False)
            docs = []
    if current is not None:
        docs.append(current)
    if docs:
        db.limit_carts.insert_many(docs, ordered=False)
    return time.perf_counter() - began


def evstream_rebuild(store: Any, db: Any, projection: Any) -> float:
    """Seconds for a full evstream rebuild into an empty collection."""
    db.drop_collection("bench_carts")
    db.evstream_projections.delete_many({})
    began = time.perf_counter()
    # As the CLI plans when no progress bar needs a total (stderr not a terminal).
    rebuild(store, plan_rebuild(store, projection, incremental=False, with_total=False))
    return time.perf_counter() - began


def processes(uri: str, db_name: str, module: Path, parts: int) -> float:
    """Wall seconds for `parts` rebuild processes started together (1: one whole rebuild)."""
    env = {**os.environ, "EVSTREAM_URI": uri, "EVSTREAM_DB": db_name}
    base = [sys.executable, "-m", "evstream", "rebuild", "bench_carts", "--module", str(module)]
    argvs = (
        [base]
        if parts == 1
        else [[*base, "--partition", f"{i}/{parts}"] for i in range(1, parts + 1)]
    )
    began = time.perf_counter()
    procs = [
        subprocess.Popen([*a, "-o", "json"], env=env, stdout=subprocess.DEVNULL) for a in argvs
    ]
    codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - began
    if any(codes):
        raise SystemExit(f"a rebuild process failed: {codes}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--streams", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--uri", default=None)
    args = parser.parse_args()
    db_name = f"bench_projection_{uuid.uuid4().hex[:8]}"
    with server(args.uri) as uri, tempfile.TemporaryDirectory() as tmp:
        module = Path(tmp) / "bench_carts.py"
        module.write_text(MODULE)
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, tz_aware=True)
        db = client[db_name]
        store = connect(Settings(uri=uri, db=db_name), lambda message: None)
        try:
            ensure_indexes(store)
            rate = generate(db, args.events, args.streams)
            declared = db.events.count_documents({"type": {"$in": list(DECLARED)}})
            print(
                f"log: {args.events:,} events over {args.streams:,} streams, 6 types "
                f"({declared:,} of the 2 declared), written at {rate:,.0f} events/s"
            )
            projection = load_projection("bench_carts", str(module))
            limits, rebuilds = [], []
            for r in range(args.rounds):
                pair = [
                    ("limit", lambda: limit(db)),
                    ("rebuild", lambda: evstream_rebuild(store, db, projection)),
                ]
                for name, fn in pair if r % 2 == 0 else pair[::-1]:
                    (limits if name == "limit" else rebuilds).append(fn())
            made = db.bench_carts.count_documents({})
            if made != db.limit_carts.count_documents({}):
                raise SystemExit(f"rebuild made {made} documents, the limit another number")
            lim, reb = median(limits), median(rebuilds)
            print(
                f"limit (scan of 2 types + fold + insert_many): {lim:.2f} s "
                f"({declared / lim:,.0f} events/s)  [{', '.join(f'{s:.2f}' for s in limits)}]"
            )
            print(
                f"evstream rebuild, full, into an empty collection: {reb:.2f} s "
                f"({declared / reb:,.0f} events/s)  [{', '.join(f'{s:.2f}' for s in rebuilds)}]"
            )
            ratios = [r / li for r, li in zip(rebuilds, limits, strict=True)]
            print(
                f"rebuild / limit: {median(ratios):.2f}x, the median of each round's ratio "
                f"[{', '.join(f'{x:.2f}' for x in ratios)}] (medians' ratio {reb / lim:.2f}x)"
            )
            wholes, parts = [], []
            for r in range(args.rounds):
                pair = [("whole", 1), ("parts", args.parts)]
                for _name, n in pair if r % 2 == 0 else pair[::-1]:
                    db.drop_collection("bench_carts")
                    db.evstream_projections.delete_many({})
                    (wholes if n == 1 else parts).append(processes(uri, db_name, module, n))
            if db.bench_carts.count_documents({}) != made:
                raise SystemExit("the parts together did not make every document")
            whole, split = median(wholes), median(parts)
            shares = [p / w for p, w in zip(parts, wholes, strict=True)]
            print(
                f"1 whole rebuild process: {whole:.2f} s; {args.parts} partition processes in "
                f"parallel: {split:.2f} s; parts / whole: {median(shares):.2f}x "
                f"[{', '.join(f'{x:.2f}' for x in shares)}]"
            )
        finally:
            store.close()
            client.drop_database(db_name)
            client.close()


if __name__ == "__main__":
    main()
