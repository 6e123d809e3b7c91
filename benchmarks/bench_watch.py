"""`evstream watch` against a raw pymongo change-stream loop on the same server, same run.

    python benchmarks/bench_watch.py [--latency-events 600] [--throughput-events 20000]
                                     [--rounds 3] [--checkpoint-events 5000]
                                     [--idle-seconds 10] [--uri URI]

Latency: one event at a time (5-15 ms apart) inserted from this process; the time from just
before insert_one to the line arriving on the watcher's stdout (a pipe), for `evstream watch
-o json` and for a raw loop (`for change in collection.watch(): print(json_util.dumps(...))`),
each a real process. p50 and p99 over all rounds.

Throughput: the watcher opens its stream, is stopped (SIGSTOP), N events are inserted, and it
is continued (SIGCONT): the time until it has written N lines to /dev/null (`--limit N`, so it
exits) is pure consumption. Same for the raw loop, as written plainly and with evstream's
getMore batch size (1,000). Medians over rounds. Then once with `--checkpoint` (information).

Idle CPU: `evstream watch` on the embedded dev store (no URI), idle for --idle-seconds after a
warm-up; CPU time of the watcher and of the dev store's server process, as % of one core. The
raw loop idles on the same server for comparison (nx-27017 answers getMore at once).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pymongo

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, server  # noqa: E402

from evstream.bench import (  # noqa: E402
    cpu_seconds,
    latency_round,
    percentile,
    throughput_round,
)
from evstream.embedded import terminate  # noqa: E402
from evstream.storage.raw import WATCH_LOOP as RAW_LOOP  # noqa: E402


def idle_cpu(kind: str, seconds: float, home: Path, servers: list[int]) -> tuple[float, float]:
    """(% of a core for the watcher, for the server) while idle on the embedded dev store.

    The dev store's pid goes into `servers`, so that the caller can be sure to stop it.
    """
    env = {**os.environ, "EVSTREAM_HOME": str(home)}
    for name in ("EVSTREAM_URI", "MONGODB_URI"):
        env.pop(name, None)
    status = subprocess.run(
        [sys.executable, "-m", "evstream", "server", "start", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
    )
    if status.returncode != 0:
        raise SystemExit(f"evstream server start failed: {status.stderr.strip()}")
    record = json.loads(status.stdout)
    servers.append(record["pid"])
    server_pid, uri = record["pid"], record["uri"]
    if kind == "raw":
        argv = [sys.executable, "-c", RAW_LOOP, uri, "evstream", "0"]
    else:
        argv = [sys.executable, "-m", "evstream", "watch"]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    for line in proc.stderr:
        if "ready" in line or "(Ctrl-C to stop)" in line:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        time.sleep(2.0)  # warm-up: the watcher's pacing reaches its idle rate
        w0, s0, t0 = cpu_seconds(proc.pid), cpu_seconds(server_pid), time.perf_counter()
        time.sleep(seconds)
        w1, s1, t1 = cpu_seconds(proc.pid), cpu_seconds(server_pid), time.perf_counter()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    elapsed = t1 - t0
    return 100 * (w1 - w0) / elapsed, 100 * (s1 - s0) / elapsed


def latency(kind: str, uri: str, events: int, seed: int) -> list[float]:
    return in_scratch(
        uri, f"bench_watch_lat_{kind}", lambda db: latency_round(kind, uri, db, events, seed)
    )


def throughput(kind: str, uri: str, events: int) -> tuple[float, float]:
    return in_scratch(
        uri, f"bench_watch_tp_{kind}", lambda db: throughput_round(kind, uri, db, events)
    )


def in_scratch(uri: str, prefix: str, work: Any) -> Any:
    """work(db name) in a fresh database, dropped afterwards."""
    db = f"{prefix}_{uuid.uuid4().hex[:6]}"
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
    try:
        return work(db)
    finally:
        client.drop_database(db)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-events", type=int, default=600)
    parser.add_argument("--throughput-events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkpoint-events", type=int, default=5_000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--uri", default=None, help="a MongoDB to use instead of a fresh nx-27017")
    args = parser.parse_args()

    lat: dict[str, list[float]] = {"raw": [], "evstream": []}
    tput: dict[str, list[float]] = {"raw": [], "raw-batch1000": [], "evstream": []}
    cpu: dict[str, list[float]] = {"raw": [], "raw-batch1000": [], "evstream": []}
    with server(args.uri) as uri:
        for r in range(args.rounds):
            per_round = max(1, args.latency_events // args.rounds)
            for kind in ("raw", "evstream") if r % 2 == 0 else ("evstream", "raw"):
                lat[kind] += latency(kind, uri, per_round, seed=r)
            for kind in ("raw", "raw-batch1000", "evstream"):
                rate, cpu_us = throughput(kind, uri, args.throughput_events)
                tput[kind].append(rate)
                cpu[kind].append(cpu_us)
    print(
        f"server: {'given URI' if args.uri else 'nx-27017 (fresh, local)'}; "
        f"{args.rounds} rounds, alternating order"
    )
    print(f"latency, insert → line on stdout, {len(lat['raw'])} events each, 5-15 ms apart:")
    for kind in ("raw", "evstream"):
        values = lat[kind]
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(
            f"  {kind:<9} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
            f"   mean {statistics.fmean(values):6.2f} ms"
        )
    d50 = percentile(lat["evstream"], 0.5) - percentile(lat["raw"], 0.5)
    print(f"  evstream p50 - raw p50: {d50:+.2f} ms (target <= +2 ms)")
    print(
        f"throughput, backlog of {args.throughput_events:,} events → /dev/null, median of rounds:"
    )
    for kind in ("raw", "raw-batch1000", "evstream"):
        print(
            f"  {kind:<13} {median(tput[kind]):9,.0f} events/s  "
            f"{median(cpu[kind]):5.1f} µs CPU/event   rounds: "
            + ", ".join(f"{v:,.0f}" for v in tput[kind])
        )
    ratio = median(tput["evstream"]) / median(tput["raw"])
    fair = median(tput["evstream"]) / median(tput["raw-batch1000"])
    print(
        f"  evstream / raw: {ratio:.2f}x; / raw with evstream's batch size: {fair:.2f}x "
        "(target >= 0.8x)"
    )
    with server(args.uri) as uri:
        saved, _ = throughput("evstream-checkpoint", uri, args.checkpoint_events)
    print(
        f"  evstream --checkpoint {saved:9,.0f} events/s (one save per printed change; "
        f"{args.checkpoint_events:,} events, one round)"
    )
    with tempfile.TemporaryDirectory(prefix="evstream-bench-home-") as tmp:
        home = Path(tmp)
        servers: list[int] = []
        try:
            ours = idle_cpu("evstream", args.idle_seconds, home, servers)
            raw = idle_cpu("raw", args.idle_seconds, home, servers)
        finally:
            subprocess.run(
                [sys.executable, "-m", "evstream", "server", "stop"],
                env={**os.environ, "EVSTREAM_HOME": str(home)},
                capture_output=True,
            )
            for pid in servers:  # in case `server stop` could not
                terminate(pid)
    print(
        f"idle CPU on the embedded dev store, {args.idle_seconds:g} s after a 2 s warm-up "
        "(% of one core):"
    )
    print(f"  evstream watch  {ours[0]:5.1f} %   its server {ours[1]:5.1f} %")
    print(f"  raw loop        {raw[0]:5.1f} %   its server {raw[1]:5.1f} %")


if __name__ == "__main__":
    main()
