"""`evstream rebuild-sessions` against the limit and against the naive way, at two log sizes.

    python benchmarks/bench_rebuild.py [--scale 1.0] [--rounds 3] [--naive-events 5000] [--uri URI]

For 30,000 events over 3,000 streams and 300,000 over 30,000 (times --scale), on one server:

- limit: one scan of the log sorted by (stream, version), the fold in memory (evstream.sessions),
  insert_many of all sessions into an empty collection; in-process, nothing else.
- full rebuild into an empty `sessions`, as a real process (`rebuild-sessions -o json`): the
  command's own seconds (from its summary), its wall time with start-up, and its peak RSS.
  Limit and rebuild alternate for --rounds rounds; the table shows medians.
- full rebuild again over the finished projection (nothing changed), and --incremental after 1%
  more events.
- naive: one update_one per event, in log order, for the first --naive-events events into an
  empty collection; the time for the whole log is extrapolated from that rate.

Events are generated with raw insert_many (not through the CLI), interleaved across streams as
a live system writes them. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pymongo

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, run_measured, server  # noqa: E402

from evstream.bench import rebuild_limit  # noqa: E402
from evstream.projection import EVENT_FIELDS  # noqa: E402
from evstream.settings import Settings  # noqa: E402
from evstream.storage import connect, ensure_indexes  # noqa: E402

TYPES = ("session.started", "login", "logout", "profile.updated", "page.viewed", "session.ended")
WEIGHTS = (5, 35, 20, 10, 25, 5)


def generate(
    db: Any, events: int, streams: int, *, start: int = 0, since: timedelta, seed: int = 1
) -> float:
    """Append `events` events over `streams` streams with insert_many; returns events/s.

    Their `ts` values spread evenly from `since` ago until now.
    """
    rng = random.Random(seed + start)
    heads: dict[str, int] = {}
    if start:
        for row in db.events.aggregate([{"$group": {"_id": "$stream", "v": {"$max": "$version"}}}]):
            heads[row["_id"]] = row["v"]
    base = datetime.now(timezone.utc) - since
    step = since / events
    batch: list[dict[str, Any]] = []
    began = time.perf_counter()
    for i in range(events):
        stream = f"user-{(start + i) % streams:06d}"
        heads[stream] = version = heads.get(stream, 0) + 1
        kind = rng.choices(TYPES, WEIGHTS)[0]
        batch.append(
            {
                "_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "stream": stream,
                "version": version,
                "type": kind,
                "data": {
                    "name": f"N{i % 97}",
                    "email": f"{stream}@example.com",
                    "username": stream,
                    "path": "/docs",
                },
                "meta": {"source": "bench"},
                "ts": base + step * i,
            }
        )
        if len(batch) == 1000:
            db.events.insert_many(batch)
            batch = []
    if batch:
        db.events.insert_many(batch)
    return events / (time.perf_counter() - began)


NAIVE = {
    "session.started": lambda d, ts: {
        "$set": {
            "name": d.get("name"),
            "email": d.get("email"),
            "status": "active",
            "started_at": ts,
        }
    },
    "login": lambda d, ts: {
        "$set": {"username": d.get("username"), "status": "active", "last_login": ts},
        "$inc": {"login_count": 1},
    },
    "logout": lambda d, ts: {"$set": {"status": "signed_out", "last_logout": ts}},
    "profile.updated": lambda d, ts: {
        "$set": {k: d[k] for k in ("name", "email") if k in d} or {"_": None}
    },
    "session.ended": lambda d, ts: {"$set": {"status": "ended", "ended_at": ts}},
}


def naive(db: Any, events: int) -> float:
    """Events/s of the naive projection: one update_one (upsert) per event, in log order."""
    db.drop_collection("naive_sessions")
    coll = db.naive_sessions
    began = time.perf_counter()
    done = 0
    for event in db.events.find({}, EVENT_FIELDS).sort("ts", 1).limit(events):
        update = NAIVE.get(event["type"], lambda d, ts: {})(event.get("data") or {}, event["ts"])
        update.setdefault("$set", {}).update(version=event["version"], updated_at=event["ts"])
        update.setdefault("$inc", {})["events"] = 1
        coll.update_one({"_id": event["stream"]}, update, upsert=True)
        done += 1
    rate = done / (time.perf_counter() - began)
    db.drop_collection("naive_sessions")
    return rate


def rebuild_process(uri: str, db_name: str, *args: str) -> tuple[dict[str, Any], float, int]:
    """(summary, wall seconds, peak RSS in KiB) of `evstream rebuild-sessions` as a process."""
    seconds, rss, stdout = run_measured(
        [sys.executable, "-m", "evstream", "rebuild-sessions", "-o", "json", *args],
        {"EVSTREAM_URI": uri, "EVSTREAM_DB": db_name},
    )
    return json.loads(stdout.strip().splitlines()[-1]), seconds, rss


def bench_size(
    uri: str, events: int, streams: int, naive_events: int, rounds: int
) -> dict[str, Any]:
    db_name = f"bench_rebuild_{events}"
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, tz_aware=True)
    client.drop_database(db_name)
    db = client[db_name]
    store = connect(Settings(uri=uri, db=db_name), lambda message: None)
    ensure_indexes(store)
    print(f"\n{events:,} events over {streams:,} streams", flush=True)
    rate = generate(db, events, streams, since=timedelta(hours=2))
    print(f"  generated with insert_many at {rate:,.0f} events/s", flush=True)
    row: dict[str, Any] = {"events": events, "streams": streams}
    limits, fulls, walls, rsss = [], [], [], []
    for i in range(rounds):  # interleaved, first one then the other first, on a shared machine
        if i % 2 == 0:
            limits.append(rebuild_limit(store))
        db.drop_collection("sessions")
        db.drop_collection("evstream_projections")
        first, wall, rss = rebuild_process(uri, db_name)
        assert first["written"] == streams, first
        if i % 2 == 1:
            limits.append(rebuild_limit(store))
        fulls.append(first["seconds"])
        walls.append(wall)
        rsss.append(rss)
        print(
            f"  limit (scan + fold + insert_many) {limits[-1]:.2f} s; rebuild into an empty "
            f"sessions {first['seconds']:.2f} s in the command ({wall:.2f} s wall with start-up),"
            f" peak RSS {rss / 1024:.1f} MiB",
            flush=True,
        )
    row.update(limit=median(limits), full=median(fulls), full_wall=median(walls), rss=max(rsss))
    again, wall, rss = rebuild_process(uri, db_name)
    row.update(again=again["seconds"], again_rss=rss)
    print(f"  rebuild again, nothing changed: {again['seconds']:.2f} s, {again['written']} written")
    more = max(events // 100, 1)
    generate(db, more, streams, start=events, since=timedelta(seconds=1))
    inc, wall, rss = rebuild_process(uri, db_name, "--incremental")
    row.update(incremental=inc["seconds"], inc_written=inc["written"], more=more)
    print(
        f"  --incremental after {more:,} more events: {inc['seconds']:.2f} s "
        f"({inc['mode']}, {inc['written']:,} written)",
        flush=True,
    )
    sample = min(naive_events, events)
    naive_rate = naive(db, sample)
    row.update(naive_rate=naive_rate, naive=events / naive_rate, naive_sample=sample)
    print(
        f"  naive, one update per event: {naive_rate:,.0f} events/s on the first {sample:,} "
        f"events; {row['naive']:.1f} s extrapolated to {events:,}",
        flush=True,
    )
    client.drop_database(db_name)
    client.close()
    store.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply both sizes by this")
    parser.add_argument("--naive-events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="limit/rebuild pairs per size")
    parser.add_argument("--uri", help="a MongoDB URI (default: a throwaway nx-27017 server)")
    args = parser.parse_args()
    sizes = [(int(30_000 * args.scale), int(3_000 * args.scale))]
    sizes.append((sizes[0][0] * 10, sizes[0][1] * 10))
    with server(args.uri) as uri:
        rows = [
            bench_size(uri, events, streams, args.naive_events, args.rounds)
            for events, streams in sizes
        ]
    print(
        "\nevents   streams  limit s  rebuild s  x limit  again s  incr s  naive s*  gain  RSS MiB"
    )
    for r in rows:
        print(
            f"{r['events']:>7,}  {r['streams']:>6,}  {r['limit']:>7.2f}  {r['full']:>9.2f}  "
            f"{r['full'] / r['limit']:>7.2f}  {r['again']:>7.2f}  {r['incremental']:>6.2f}  "
            f"{r['naive']:>8.1f}  {r['naive'] / r['full']:>4.1f}x  {r['rss'] / 1024:>7.1f}"
        )
    small, large = rows
    print(
        f"\npeak RSS, 10x the log: {small['rss'] / 1024:.1f} -> {large['rss'] / 1024:.1f} MiB "
        f"({(large['rss'] / small['rss'] - 1) * 100:+.1f}%)"
    )
    print(
        f"* naive: extrapolated from {large['naive_sample']:,} events at the measured rate; "
        "rebuild s is the command's own time (its summary), start-up excluded"
    )


if __name__ == "__main__":
    main()
