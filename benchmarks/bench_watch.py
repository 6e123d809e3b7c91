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
import random
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

from evstream.embedded import terminate  # noqa: E402
from evstream.store import now_utc  # noqa: E402

RAW_LOOP = r"""
import os, sys, time
import pymongo
from bson import json_util
uri, db, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
batch = int(sys.argv[4]) if len(sys.argv) > 4 else None
coll = pymongo.MongoClient(uri, tz_aware=True)[db]["events"]
out = sys.stdout
with coll.watch(full_document="updateLookup", batch_size=batch) as stream:
    sys.stderr.write("raw: ready\n"); sys.stderr.flush()
    n = 0
    for change in stream:
        out.write(json_util.dumps(change["fullDocument"]) + "\n")
        out.flush()
        n += 1
        if limit and n >= limit:
            break
"""


def event(i: int) -> dict[str, Any]:
    return {
        "_id": str(uuid.uuid4()),
        "stream": f"user-{i % 100:03d}",
        "version": i // 100 + 1,
        "type": "login",
        "data": {"username": f"user-{i % 100:03d}", "method": "password", "n": i},
        "meta": {"source": "bench"},
        "ts": now_utc(),
    }


def start_watcher(kind: str, uri: str, db: str, limit: int, stdout: Any) -> subprocess.Popen:
    """A watcher process: raw, raw-batch1000, evstream or evstream-checkpoint; waits until ready."""
    env = {**os.environ, "EVSTREAM_URI": uri, "EVSTREAM_DB": db}
    if kind.startswith("raw"):
        argv = [sys.executable, "-c", RAW_LOOP, uri, db, str(limit)]
        if kind == "raw-batch1000":
            argv.append("1000")
    else:
        argv = [sys.executable, "-m", "evstream", "watch", "-o", "json"]
        if kind == "evstream-checkpoint":
            argv += ["--checkpoint", "bench"]
        if limit:
            argv += ["--limit", str(limit)]
    proc = subprocess.Popen(
        argv, stdout=stdout, stderr=subprocess.PIPE, env=env, text=True, bufsize=1
    )
    for line in proc.stderr:  # wait until the stream is open
        if "ready" in line or "(Ctrl-C to stop)" in line:
            break
    else:
        raise SystemExit(f"{kind} watcher did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def latency_round(kind: str, uri: str, events: int, seed: int) -> list[float]:
    """Milliseconds from insert to line, one event at a time."""
    db = f"bench_watch_lat_{kind}_{uuid.uuid4().hex[:6]}"
    client: pymongo.MongoClient = pymongo.MongoClient(uri, tz_aware=True)
    coll = client[db]["events"]
    coll.insert_one(event(-1))  # the collection exists before the watcher opens
    proc = start_watcher(kind, uri, db, 0, subprocess.PIPE)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    done = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            now = time.perf_counter()
            doc = json.loads(line)
            doc = doc.get("doc", doc)
            got[doc["_id"]] = now
            if len(got) >= events:
                done.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    rng = random.Random(seed)
    docs = [event(i) for i in range(events)]
    try:
        for doc in docs:
            time.sleep(rng.uniform(0.005, 0.015))
            doc["ts"] = now_utc()
            sent[doc["_id"]] = time.perf_counter()
            coll.insert_one(doc)
        if not done.wait(30):
            raise SystemExit(f"{kind}: only {len(got)} of {events} lines arrived")
    finally:
        proc.kill()
        proc.wait()
        client.drop_database(db)
        client.close()
    return [(got[i] - sent[i]) * 1000 for i in sent]


def throughput_round(kind: str, uri: str, events: int) -> tuple[float, float]:
    """(events/s, CPU µs per event) of a watcher consuming a backlog into /dev/null."""
    db = f"bench_watch_tp_{kind}_{uuid.uuid4().hex[:6]}"
    client: pymongo.MongoClient = pymongo.MongoClient(uri, tz_aware=True)
    coll = client[db]["events"]
    coll.insert_one(event(-1))
    docs = [event(i) for i in range(events)]
    with open(os.devnull, "w") as devnull:
        proc = start_watcher(kind, uri, db, events, devnull)
        try:
            os.kill(proc.pid, signal.SIGSTOP)
            for i in range(0, events, 1000):
                coll.insert_many(docs[i : i + 1000], ordered=False)
            cpu_before = cpu_seconds(proc.pid)
            cpu_last = cpu_before
            started = time.perf_counter()
            os.kill(proc.pid, signal.SIGCONT)
            while proc.poll() is None:  # its CPU time, sampled until it exits
                try:
                    cpu_last = cpu_seconds(proc.pid)
                except (OSError, IndexError):
                    break
                time.sleep(0.01)
            code = proc.wait(600)
            seconds = time.perf_counter() - started
            if code != 0:
                raise SystemExit(f"{kind} watcher exited {code}")
        finally:
            if proc.poll() is None:
                proc.kill()
            client.drop_database(db)
            client.close()
    return events / seconds, (cpu_last - cpu_before) / events * 1e6


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


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
                lat[kind] += latency_round(kind, uri, per_round, seed=r)
            for kind in ("raw", "raw-batch1000", "evstream"):
                rate, cpu_us = throughput_round(kind, uri, args.throughput_events)
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
        saved, _ = throughput_round("evstream-checkpoint", uri, args.checkpoint_events)
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
