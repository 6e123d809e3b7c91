"""`rebuild-sessions --follow` latency: from an event's insert to its session document updated,
against `evstream watch`'s insert-to-line latency in the same run (target: within watch + 5 ms).

    python benchmarks/bench_follow.py                 # 500 events, a fresh nx-27017 server
    python benchmarks/bench_follow.py --events 200 --uri mongodb://...

The follower's latency is seen through a change stream on `sessions`, so it includes that
stream's own delivery (about 1.5 ms on nx-27017): the figure is an upper bound.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pymongo

sys.path.insert(0, str(Path(__file__).parent))
from _common import server  # noqa: E402

from evstream.bench import latency_round, percentile  # noqa: E402
from evstream.storage import now_utc  # noqa: E402


def follow_latency(uri: str, db: str, events: int, seed: int) -> list[float]:
    """Milliseconds from insert to the session document carrying that version."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, tz_aware=True)
    database = client[db]
    first = {"_id": str(uuid.uuid4()), "stream": "warm", "version": 1, "type": "login",
             "data": {}, "ts": now_utc()}  # fmt: skip
    database.events.insert_one(first)
    env = {**os.environ, "EVSTREAM_URI": uri, "EVSTREAM_DB": db}
    proc = subprocess.Popen(
        [sys.executable, "-m", "evstream", "rebuild-sessions", "--follow", "-o", "json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    got: dict[tuple[str, int], float] = {}
    done = threading.Event()
    deadline = time.monotonic() + 30
    while database.sessions.find_one({"_id": "warm"}) is None:  # caught up and following
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the follower did not start")
        time.sleep(0.05)
    stream = database.sessions.watch(full_document="updateLookup")

    def read() -> None:
        for change in stream:
            doc = change.get("fullDocument") or {}
            if isinstance(doc.get("version"), int):
                got.setdefault((str(doc.get("_id")), doc["version"]), time.perf_counter())
            if len(got) >= events:
                done.set()
                return

    threading.Thread(target=read, daemon=True).start()
    rng = random.Random(seed)
    sent: dict[tuple[str, int], float] = {}
    heads: dict[str, int] = {}
    try:
        for i in range(events):
            time.sleep(rng.uniform(0.005, 0.015))
            name = f"user-{i % 50:02d}"
            heads[name] = heads.get(name, 0) + 1
            doc = {"_id": str(uuid.uuid4()), "stream": name, "version": heads[name],
                   "type": "login", "data": {"n": i}, "ts": now_utc()}  # fmt: skip
            sent[(name, heads[name])] = time.perf_counter()
            database.events.insert_one(doc)
        done.wait(60)
    finally:
        proc.terminate()
        proc.wait(30)
        stream.close()
        client.close()
    return [(got[k] - sent[k]) * 1000 for k in sent if k in got]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--uri")
    args = parser.parse_args()
    with server(args.uri) as uri:
        follow = follow_latency(uri, f"bench_follow_{uuid.uuid4().hex[:6]}", args.events, 1)
        watch = latency_round("evstream", uri, f"bench_watchlat_{uuid.uuid4().hex[:6]}",
                              args.events, 1)  # fmt: skip
        pymongo.MongoClient(uri).close()
    print(f"{args.events} events, one at a time")
    for name, values in (("rebuild-sessions --follow", follow), ("watch -o json", watch)):
        print(f"  {name:28s} p50 {percentile(values, 0.5):6.2f} ms   "
              f"p99 {percentile(values, 0.99):6.2f} ms   ({len(values)} seen)")  # fmt: skip
    gap = percentile(follow, 0.5) - percentile(watch, 0.5)
    print(f"  follow p50 - watch p50: {gap:+.2f} ms (target: within +5 ms)")


if __name__ == "__main__":
    main()
