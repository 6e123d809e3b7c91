"""Publishing from a pipe: throughput against a baseline's code, and a slow producer's delay.

    python benchmarks/bench_paced_publish.py [--events 30000] [--streams 3000] [--rounds 3]
        [--slow 100] [--rate 10] [--baseline main] [--uri URI]

1. A fast pipe: `cat FILE | python -m evstream publish --file -` of `--events` events, whole
   process time (the shell, cat and evstream), with this checkout's code and with the baseline's
   (a `git archive` of `--baseline`, default main), alternating, each into a fresh database of
   one server, both with a warm bytecode cache of their own. Prints medians and the ratio.
2. A slow producer: `--slow` events written one by one at `--rate` per second into the stdin of
   `python -m evstream publish --file -` (this checkout). The delay of each event is from the
   moment its line was written to the moment a change stream on the log sees it stored.
   Prints p50, p99 and the largest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from io import BytesIO
from pathlib import Path

import pymongo

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, server  # noqa: E402

from evstream.bench import synthetic_lines  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def baseline_tree(ref: str, into: Path) -> Path:
    """The baseline's evstream package, unpacked from git (the checkout is not touched)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "evstream"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pipe_publish(code: Path, file: Path, uri: str, pycache: Path) -> tuple[float, float]:
    """Whole-process (wall seconds, CPU seconds) of `cat FILE | python -m evstream publish
    --file -` with `code`; the CPU is the shell's, cat's and evstream's, as the kernel counts."""
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "PYTHONPYCACHEPREFIX": str(pycache),
        "EVSTREAM_URI": uri,
        "EVSTREAM_DB": f"bench_{uuid.uuid4().hex[:8]}",
    }
    command = f"cat {file} | {sys.executable} -m evstream publish --file - -o json"
    cpu = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"publish failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, children_cpu() - cpu


def slow_producer(uri: str, events: int, rate: float) -> list[float]:
    """Each event's delay (seconds) from its line written to its insert seen by a change stream."""
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    client: pymongo.MongoClient = pymongo.MongoClient(uri)
    coll = client[db_name]["events"]
    coll.insert_one({"_id": "warm-up"})  # the collection exists before the change stream opens
    coll.delete_one({"_id": "warm-up"})
    seen: dict[str, float] = {}
    ready = threading.Event()

    def watch() -> None:
        with coll.watch([{"$match": {"operationType": "insert"}}], max_await_time_ms=50) as stream:
            ready.set()
            while len(seen) < events + 1:
                change = stream.try_next()
                if change is not None:
                    seen[change["documentKey"]["_id"]] = time.monotonic()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(20)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVSTREAM_URI": uri, "EVSTREAM_DB": db_name}
    proc = subprocess.Popen(
        [sys.executable, "-m", "evstream", "publish", "--file", "-", "-o", "json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    # A first line, not timed: the delays below are the pipe's, not the interpreter's start-up.
    proc.stdin.write(b'{"type": "t", "stream": "s", "id": "first"}\n')
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while "first" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    written: dict[str, float] = {}
    start = time.monotonic()
    for i in range(events):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        event_id = f"slow-{i:05d}"
        line = json.dumps({"type": "t", "stream": f"s{i % 7}", "id": event_id, "data": {"n": i}})
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()
        written[event_id] = time.monotonic()
    proc.stdin.close()
    proc.wait(60)
    watcher.join(30)
    client.close()
    if len(seen) < events + 1:
        raise SystemExit(f"only {len(seen)} of {events + 1} events were seen stored")
    return sorted(seen[i] - written[i] for i in written)


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--streams", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--uri")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evstream-paced-") as tmp, server(args.uri) as uri:
        root = Path(tmp)
        file = root / "events.ndjson"
        file.write_bytes(synthetic_lines(args.events, args.streams))
        base = baseline_tree(args.baseline, root / "baseline")
        trees = {"this": (ROOT, root / "pyc-this"), args.baseline: (base, root / "pyc-base")}
        wall: dict[str, list[float]] = {name: [] for name in trees}
        cpu: dict[str, list[float]] = {name: [] for name in trees}
        for code, pycache in trees.values():  # warm the bytecode caches
            pipe_publish(code, file, uri, pycache)
        for _ in range(args.rounds):
            for name, (code, pycache) in trees.items():
                seconds, used = pipe_publish(code, file, uri, pycache)
                wall[name].append(seconds)
                cpu[name].append(used)
        base = args.baseline
        print(f"fast pipe, {args.events:,} events, {args.rounds} rounds (medians):")
        for what, figures in (("wall", wall), ("client CPU", cpu)):
            this, other = median(figures["this"]), median(figures[base])
            print(
                f"  {what}: this {this:.2f} s, {base} {other:.2f} s, ratio {this / other:.3f}"
                f"  (this {[round(t, 2) for t in figures['this']]}, "
                f"{base} {[round(t, 2) for t in figures[base]]})"
            )
        delays = slow_producer(uri, args.slow, args.rate)
        ms = [d * 1000 for d in delays]
        print(
            f"slow producer, {args.slow} events at {args.rate:g}/s (batch wait 0.1 s): "
            f"p50 {percentile(ms, 50):.0f} ms, p99 {percentile(ms, 99):.0f} ms, "
            f"max {ms[-1]:.0f} ms"
        )


if __name__ == "__main__":
    main()
