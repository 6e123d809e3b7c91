"""What keyed projections cost: a full keyed rebuild against the limit measured in the same run,
and an incremental run after a few new events against a full one.

    python benchmarks/bench_keyed.py [--events 30000] [--days 60] [--tenants 500] [--uri URI]

On one server (a fresh nx-27017 unless --uri), `--events` logins over `--days` days and
`--tenants` tenants, with other types between them (a fifth of the log):

1. `daily_logins` (key `ts:day`, docs/projections.md "Keyed projections"): a full keyed rebuild
   (`run_rebuild`, in-process) against the limit, in the same run: one `find` of the declared
   types in (ts, stream, version) order grouped by day in Python (the `$group` by the key, done
   client-side where the server cannot truncate dates), the same handler folded in Python, and
   `insert_many` into an empty collection. Target: at most 1.3x.
2. A projection keyed on `data.tenant`: a full rebuild, then 1,000 new events over 50 tenants
   and an incremental run (which refolds those 50 tenants' histories), against a second full.

Wall-clock seconds, the least of `--rounds`. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import pymongo  # noqa: E402
from _common import server  # noqa: E402

from evstream.projection import run_rebuild  # noqa: E402
from evstream.projections import Projection, bucket_start  # noqa: E402
from evstream.settings import Settings  # noqa: E402
from evstream.storage import connect, ensure_indexes  # noqa: E402


def daily() -> Projection:
    p = Projection(name="daily_logins", collection="daily_logins", version=1, types=["login"],
                   key="ts:day", initial={"logins": 0, "users": []})  # fmt: skip
    p.on("login")(login)
    return p


def tenants() -> Projection:
    p = Projection(name="tenants", collection="tenants", version=1, types=["login"],
                   key="data.tenant", initial={"logins": 0, "users": []})  # fmt: skip
    p.on("login")(login)
    return p


def login(state: dict[str, Any], event: Any) -> None:
    state["logins"] += 1
    if event["data"]["username"] not in state["users"]:
        state["users"].append(event["data"]["username"])


def fill(db: Any, events: int, days: int, tenants_n: int, start: datetime) -> None:
    step = timedelta(days=days) / events
    heads: dict[str, int] = {}
    batch = []
    for i in range(events):
        stream = f"user-{i % 2000}"
        heads[stream] = heads.get(stream, 0) + 1
        kind = "page.viewed" if i % 5 == 4 else "login"
        data = {"username": f"u{i % 300}", "tenant": f"t{i % tenants_n}"}
        batch.append({"_id": str(uuid.uuid4()), "stream": stream, "version": heads[stream],
                      "type": kind, "ts": start + step * i, "meta": {}, "data": data})  # fmt: skip
        if len(batch) == 5000:
            db.events.insert_many(batch)
            batch = []
    if batch:
        db.events.insert_many(batch)


def limit(db: Any) -> float:
    """find (log order) + group by day + fold + insert_many, into an empty collection."""
    db.drop_collection("limit_daily")
    started = time.perf_counter()
    order = [("ts", 1), ("stream", 1), ("version", 1)]
    docs = []
    day: Any = None
    state: dict[str, Any] = {}
    count = 0
    last: Any = None
    for e in db.events.find({"type": {"$in": ["login"]}}).sort(order).batch_size(2000):
        key = bucket_start(e["ts"], "day")
        if key != day:
            if day is not None:
                docs.append({"_id": day, **state, "version": count, "updated_at": last,
                             "events": count})  # fmt: skip
            day, state, count = key, {"logins": 0, "users": []}, 0
        login(state, e)
        count += 1
        last = e["ts"]
    if day is not None:
        docs.append({"_id": day, **state, "version": count, "updated_at": last, "events": count})
    if docs:
        db.limit_daily.insert_many(docs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uri")
    args = parser.parse_args()
    with server(args.uri) as uri:
        name = f"bench_keyed_{uuid.uuid4().hex[:8]}"
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, tz_aware=True)
        db = client[name]
        store = connect(Settings(uri=uri, db=name), lambda message: None)
        try:
            ensure_indexes(store)
            start = datetime.now(timezone.utc) - timedelta(days=args.days + 1)
            fill(db, args.events, args.days, args.tenants, start)
            proj = daily()
            keyed_s, limit_s = [], []
            for _ in range(args.rounds):
                db.drop_collection("daily_logins")
                db.evstream_projections.delete_many({})
                t = time.perf_counter()
                report = run_rebuild(store, proj)
                keyed_s.append(time.perf_counter() - t)
                limit_s.append(limit(db))
            same = list(db.daily_logins.find().sort("_id")) == list(
                db.limit_daily.find().sort("_id")
            )
            print(f"{args.events:,} events ({report.applied:,} logins) over {args.days} days, "
                  f"{args.rounds} rounds, least wall-clock")  # fmt: skip
            print(f"  full keyed rebuild (daily_logins)   {min(keyed_s):7.2f} s")
            print(f"  find + group + fold + insert_many   {min(limit_s):7.2f} s")
            print(f"  ratio                               {min(keyed_s) / min(limit_s):7.2f}x "
                  f"(target <= 1.3x; same documents: {same})")  # fmt: skip
            other = tenants()
            run_rebuild(store, other)
            full_s = []
            t = time.perf_counter()
            run_rebuild(store, other)
            full_s.append(time.perf_counter() - t)
            now = datetime.now(timezone.utc)
            fresh = [{"_id": str(uuid.uuid4()), "stream": f"late-{i}", "version": 1,
                      "type": "login", "ts": now - timedelta(seconds=1), "meta": {},
                      "data": {"username": f"n{i}", "tenant": f"t{i % 50}"}}
                     for i in range(1000)]  # fmt: skip
            db.events.insert_many(fresh)
            t = time.perf_counter()
            inc = run_rebuild(store, other, incremental=True)
            inc_s = time.perf_counter() - t
            print(f"  tenants: full keyed rebuild          {min(full_s):7.2f} s")
            print(f"  tenants: incremental, 1,000 events over 50 keys "
                  f"{inc_s:7.2f} s ({inc.mode}, {inc.streams} keys refolded)")  # fmt: skip
        finally:
            store.close()
            client.drop_database(name)
            client.close()


if __name__ == "__main__":
    main()
