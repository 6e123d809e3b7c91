"""`evstream check` against a plain sorted scan of the same log, at two log sizes.

    python benchmarks/bench_check.py [--scale 1.0] [--rounds 3] [--uri URI]

For 30,000 events over 3,000 streams and 300,000 over 30,000 (times --scale), on one server:

- scan: raw pymongo reading the whole log sorted by (stream, version), whole documents, in
  batches of 10,000; in-process, nothing else. Also the same scan of only the fields check
  reads (`_id`, `stream`, `version`, `type`, `ts`), for reference: on MongoDB the smaller read
  is cheaper, on nx-27017 (which projects in Python) dearer, and check reads whichever is
  cheaper for the server.
- check: `evstream check -o json` as a real process: the command's own seconds (from its
  report), its wall time with start-up, and its peak RSS.
  Scan and check alternate for --rounds rounds; the table shows medians. The target is a read
  rate of at least 0.8x the scan's (scan seconds / check seconds >= 0.8).

Events are generated with raw insert_many (not through the CLI), interleaved across streams as
a live system writes them; the log is healthy, so check exits 0. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pymongo

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, run_measured, server  # noqa: E402

from evstream.settings import Settings  # noqa: E402
from evstream.storage import connect, ensure_indexes  # noqa: E402
from evstream.storage.check import CHECK_FIELDS, SCAN_BATCH  # noqa: E402

TYPES = ("session.started", "login", "logout", "profile.updated", "page.viewed")


def generate(db: Any, events: int, streams: int) -> float:
    """Append `events` events round robin over `streams` streams; returns events/s."""
    base = datetime.now(timezone.utc) - timedelta(hours=2)
    step = timedelta(hours=2) / events
    batch: list[dict[str, Any]] = []
    began = time.perf_counter()
    for i in range(events):
        stream = f"user-{i % streams:06d}"
        batch.append(
            {
                "_id": str(uuid.UUID(int=(i * 2654435761) % (1 << 128) | 1 << 127)),
                "stream": stream,
                "version": i // streams + 1,
                "type": TYPES[i % len(TYPES)],
                "data": {"username": stream, "email": f"{stream}@example.com", "path": "/docs"},
                "meta": {"source": "bench"},
                "ts": base + step * i,
            }
        )
        if len(batch) == 5000:
            db.events.insert_many(batch, ordered=False)
            batch = []
    if batch:
        db.events.insert_many(batch, ordered=False)
    return events / (time.perf_counter() - began)


def scan(db: Any, projection: dict[str, int] | None) -> float:
    """Seconds to read the log sorted by (stream, version), as pymongo alone would."""
    began = time.perf_counter()
    n = 0
    cursor = db.events.find({}, projection, batch_size=SCAN_BATCH).sort(
        [("stream", 1), ("version", 1)]
    )
    for _ in cursor:
        n += 1
    return time.perf_counter() - began


def check_process(uri: str, db_name: str) -> tuple[dict[str, Any], float, int]:
    """(report, wall seconds, peak RSS in KiB) of `evstream check -o json` as a process."""
    seconds, rss, stdout = run_measured(
        [sys.executable, "-m", "evstream", "check", "-o", "json"],
        {"EVSTREAM_URI": uri, "EVSTREAM_DB": db_name},
    )
    return json.loads(stdout.strip().splitlines()[-1]), seconds, rss


def bench_size(uri: str, events: int, streams: int, rounds: int) -> dict[str, Any]:
    db_name = f"bench_check_{events}"
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, tz_aware=True)
    client.drop_database(db_name)
    db = client[db_name]
    store = connect(Settings(uri=uri, db=db_name), lambda message: None)
    ensure_indexes(store)
    store.close()
    print(f"\n{events:,} events over {streams:,} streams", flush=True)
    rate = generate(db, events, streams)
    print(f"  generated with insert_many at {rate:,.0f} events/s", flush=True)
    scans, fields, checks, walls, rsss = [], [], [], [], []
    for i in range(rounds):  # alternating which goes first, on a shared machine
        if i % 2 == 0:
            scans.append(scan(db, None))
        report, wall, rss = check_process(uri, db_name)
        assert report["healthy"] and report["events"] == events, report
        if i % 2 == 1:
            scans.append(scan(db, None))
        checks.append(report["seconds"])
        walls.append(wall)
        rsss.append(rss)
        print(
            f"  scan {scans[-1]:.2f} s; check {checks[-1]:.2f} s in the command "
            f"({wall:.2f} s wall with start-up), peak RSS {rss / 1024:.1f} MiB "
            f"({scans[-1] / checks[-1]:.2f}x the scan's rate)",
            flush=True,
        )
    fields.append(scan(db, CHECK_FIELDS))
    client.drop_database(db_name)
    client.close()
    return {
        "events": events,
        "streams": streams,
        "scan": median(scans),
        "fields_scan": median(fields),
        "check": median(checks),
        "wall": median(walls),
        "rss": max(rsss),
        "ratio": median([scan_s / check_s for scan_s, check_s in zip(scans, checks, strict=True)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply both sizes by this")
    parser.add_argument("--rounds", type=int, default=3, help="scan/check pairs per size")
    parser.add_argument("--uri", help="a MongoDB URI (default: a throwaway nx-27017 server)")
    args = parser.parse_args()
    sizes = [(int(30_000 * args.scale), int(3_000 * args.scale))]
    sizes.append((sizes[0][0] * 10, sizes[0][1] * 10))
    with server(args.uri) as uri:
        rows = [bench_size(uri, events, streams, args.rounds) for events, streams in sizes]
    print(
        "\nevents   streams  scan s  check s  rate vs scan  per round  wall s  5-field scan s"
        "  RSS MiB"
    )
    for r in rows:
        print(
            f"{r['events']:>7,}  {r['streams']:>6,}  {r['scan']:>6.2f}  {r['check']:>7.2f}  "
            f"{r['scan'] / r['check']:>11.2f}x  {r['ratio']:>8.2f}x  {r['wall']:>6.2f}  "
            f"{r['fields_scan']:>14.2f}  "
            f"{r['rss'] / 1024:>7.1f}"
        )
    small, large = rows
    print(
        f"\npeak RSS, 10x the log: {small['rss'] / 1024:.1f} -> {large['rss'] / 1024:.1f} MiB "
        f"({(large['rss'] / small['rss'] - 1) * 100:+.1f}%)"
    )
    print(
        "rate vs scan: median scan seconds / median check seconds (target >= 0.80); per round: "
        "the median of each round's ratio; check s is the command's own time (its report), "
        "start-up excluded"
    )


if __name__ == "__main__":
    main()
