"""`evstream bench`: evstream's workloads against raw pymongo doing the same work, on one server.

Each workload runs in scratch databases on the configured server, dropped afterwards unless
kept. The raw baseline runs in the same process and the same run, so the ratio is what carries
over from one deployment to another, not the absolute figures.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evstream.settings import Settings
from evstream.storage import Store, connect, ensure_indexes, now_utc
from evstream.storage import raw as raw_pymongo

WORKLOADS = ("publish", "rebuild", "watch", "exec")
TYPES = ("login", "logout", "profile.updated", "page.viewed")
FOLD_TYPES = (
    "session.started",
    "login",
    "logout",
    "profile.updated",
    "page.viewed",
    "session.ended",
)
Progress = Callable[[str], None]


@dataclass
class BenchResult:
    """One workload's figures: evstream against the raw baseline."""

    workload: str
    events: int
    evstream_seconds: float
    raw_seconds: float
    raw_label: str
    extra: dict[str, Any] = field(default_factory=dict)
    evstream_cpu: float | None = None  # seconds of the evstream side's own CPU (client only)
    raw_cpu: float | None = None

    @property
    def cpu_ratio(self) -> float | None:
        """evstream's client CPU over raw pymongo's for the same job: what carries over to a
        server fast enough that the client is the limit."""
        if self.evstream_cpu is None or not self.raw_cpu:
            return None
        return self.evstream_cpu / self.raw_cpu

    def cpu_per_event(self, side: str) -> float | None:
        """Client CPU microseconds per event of one side."""
        cpu = self.evstream_cpu if side == "evstream" else self.raw_cpu
        return None if cpu is None or not self.events else cpu / self.events * 1e6

    @property
    def ratio(self) -> float:
        """evstream's time over the raw time (lower is better; 1.0 is parity)."""
        return self.evstream_seconds / self.raw_seconds if self.raw_seconds else float("inf")

    @property
    def events_per_second(self) -> float:
        """evstream's throughput."""
        return self.events / self.evstream_seconds if self.evstream_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready object."""
        doc: dict[str, Any] = {
            "workload": self.workload,
            "events": self.events,
            "evstream_seconds": round(self.evstream_seconds, 4),
            "raw_seconds": round(self.raw_seconds, 4),
            "ratio": round(self.ratio, 3),
            "events_per_second": round(self.events_per_second, 1),
            "raw": self.raw_label,
            **self.extra,
        }
        if self.cpu_ratio is not None:
            doc["evstream_cpu_us_per_event"] = round(self.cpu_per_event("evstream") or 0, 2)
            doc["raw_cpu_us_per_event"] = round(self.cpu_per_event("raw") or 0, 2)
            doc["cpu_ratio"] = round(self.cpu_ratio, 3)
        return doc


class Scratch:
    """Scratch databases on the configured server, dropped at the end unless kept."""

    def __init__(
        self, settings: Settings, keep: bool, evstream_first: bool = False, run: str = ""
    ) -> None:
        self.settings = settings
        self.keep = keep
        self.evstream_first = evstream_first
        self.run = run or new_run()
        self.stores: list[Store] = []

    def store(self, name: str) -> Store:
        """A connection to a fresh scratch database, `evstream_bench_<run>_<name>`."""
        db = f"evstream_bench_{self.run}_{name}"[:63]
        store = connect(
            Settings(uri=self.settings.uri, db=db, home=self.settings.home), lambda m: None
        )
        raw_pymongo.drop_database(store)
        self.stores.append(store)
        return store

    def sides(self) -> tuple[str, str]:
        """The order of this round's two runs; alternating rounds spread a server's drift evenly."""
        return ("evstream", "raw") if self.evstream_first else ("raw", "evstream")

    def close(self) -> list[str]:
        """Drop (unless kept) and disconnect; the names of the databases kept."""
        kept = []
        for store in self.stores:
            if self.keep:
                kept.append(store.db.name)
            else:
                raw_pymongo.drop_database(store)
            store.close()
        return kept


def new_run() -> str:
    """The id in one bench invocation's scratch database names, evstream_bench_<run>_*."""
    return uuid.uuid4().hex[:8]


def synthetic_lines(
    events: int, streams: int, seed: int = 1, types: tuple[str, ...] = TYPES
) -> bytes:
    """NDJSON events interleaved across streams, as a live system writes them."""
    rng = random.Random(seed)
    out = io.StringIO()
    for i in range(events):
        stream = f"user-{rng.randrange(streams):06d}"
        data = {
            "username": stream,
            "name": f"N{i % 97}",
            "email": f"{stream}@example.com",
            "path": rng.choice(("/", "/docs", "/pricing")),
            "n": i,
        }
        out.write(json.dumps({"type": rng.choice(types), "stream": stream, "data": data}) + "\n")
    return out.getvalue().encode()


def documents_for(lines: bytes, span: float = 0.0) -> list[dict[str, Any]]:
    """The documents evstream stores for `lines`, built ahead of the raw baseline's timed insert;
    with `span`, their `ts` spread evenly over that many seconds up to now (a backlog)."""
    from datetime import timedelta

    from evstream.events import new_event_id

    heads: dict[str, int] = {}
    now = now_utc()
    step = timedelta(seconds=span) / max(1, lines.count(b"\n"))
    ts = now - timedelta(seconds=span)
    docs = []
    for line in lines.splitlines():
        ts = ts + step if span else now
        row = json.loads(line)
        heads[row["stream"]] = version = heads.get(row["stream"], 0) + 1
        docs.append(
            {
                "_id": new_event_id(),
                "stream": row["stream"],
                "version": version,
                "type": row["type"],
                "data": row["data"],
                "ts": ts,
            }
        )
    return docs


def bench_publish(scratch: Scratch, events: int, streams: int, progress: Progress) -> BenchResult:
    """Bulk publish of NDJSON against insert_many of the same documents in batches of 1,000.

    The baseline writes into a collection with the log's own indexes: every index is work the
    server does on each insert, so a baseline without them would not be doing the same work.
    """
    from evstream.publishing import publish_stream

    lines = synthetic_lines(events, streams)
    for side in scratch.sides():
        if side == "raw":
            raw_store = scratch.store("publish_raw")
            ensure_indexes(raw_store)
            progress("publish: raw insert_many")
            cpu = time.process_time()
            docs = documents_for(lines)  # the loader's own work: CPU counted, wall not
            started = time.perf_counter()
            raw_pymongo.insert_batches(raw_store, docs)
            raw = time.perf_counter() - started
            raw_cpu = time.process_time() - cpu
            del docs
        else:
            store = scratch.store("publish")
            ensure_indexes(store)
            progress("publish: evstream")
            cpu = time.process_time()
            started = time.perf_counter()
            report = publish_stream(store, io.BytesIO(lines))
            took = time.perf_counter() - started
            took_cpu = time.process_time() - cpu
    if report.published != events:
        raise RuntimeError(f"publish stored {report.published} of {events} events")
    return BenchResult(
        "publish",
        events,
        took,
        raw,
        "insert_many, batches of 1,000, same indexes",
        evstream_cpu=took_cpu,
        raw_cpu=raw_cpu,
    )


# --- watch: real watcher processes, as a user runs them ----------------------------------------


def watch_event(i: int) -> dict[str, Any]:
    """A stored event for the watch workloads, 100 streams round robin."""
    return {
        "_id": str(uuid.uuid4()),
        "stream": f"user-{i % 100:03d}",
        "version": i // 100 + 1,
        "type": "login",
        "data": {"username": f"user-{i % 100:03d}", "method": "sso", "n": i},
        "meta": {"source": "bench"},
        "ts": now_utc(),
    }


def start_watcher(kind: str, uri: str, db: str, limit: int, stdout: Any) -> subprocess.Popen:
    """A watcher process: raw, raw-batch1000, evstream or evstream-checkpoint, or a reader of
    the whole log (raw-replay, evstream-replay); waits until ready."""
    env = {**os.environ, "EVSTREAM_URI": uri, "EVSTREAM_DB": db}
    if kind == "raw-replay":
        argv = [sys.executable, "-c", raw_pymongo.READ_LOOP, uri, db]
    elif kind == "evstream-replay":
        argv = [sys.executable, "-m", "evstream", "watch", "-o", "json"]
        argv += ["--from", "start", "--no-follow"]
    elif kind.startswith("raw"):
        argv = [sys.executable, "-c", raw_pymongo.WATCH_LOOP, uri, db, str(limit)]
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


def latency_round(kind: str, uri: str, db: str, events: int, seed: int) -> list[float]:
    """Milliseconds from insert to line, one event at a time, into database `db`."""
    coll = raw_pymongo.RawLog(uri, db)
    coll.insert_one(watch_event(-1))  # the collection exists before the watcher opens
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
    docs = [watch_event(i) for i in range(events)]
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
        coll.close()
    return [(got[i] - sent[i]) * 1000 for i in sent]


def throughput_round(kind: str, uri: str, db: str, events: int) -> tuple[float, float]:
    """(events/s, CPU µs per event) of a watcher consuming a backlog into /dev/null (POSIX)."""
    coll = raw_pymongo.RawLog(uri, db)
    coll.insert_one(watch_event(-1))
    docs = [watch_event(i) for i in range(events)]
    with open(os.devnull, "w") as devnull:
        proc = start_watcher(kind, uri, db, events, devnull)
        try:
            os.kill(proc.pid, signal.SIGSTOP)
            for i in range(0, events, 1000):
                coll.insert_many(docs[i : i + 1000])
            seconds, cpu = resume_until_exit(proc, f"{kind} watcher")
        finally:
            if proc.poll() is None:
                proc.kill()
            coll.close()
    return events / seconds, cpu / events * 1e6


def replay_round(kind: str, uri: str, db: str, events: int) -> tuple[float, float]:
    """(events/s, CPU µs per event) of reading a log of `events` whole into /dev/null, from
    the moment the reader is connected and ready until it exits (POSIX)."""
    with open(os.devnull, "w") as devnull:
        proc = start_watcher(kind, uri, db, 0, devnull)
        try:
            os.kill(proc.pid, signal.SIGSTOP)  # the read has just begun: count from here
            seconds, cpu = resume_until_exit(proc, f"{kind} reader")
        finally:
            if proc.poll() is None:
                proc.kill()
    return events / seconds, cpu / events * 1e6


def resume_until_exit(proc: subprocess.Popen, what: str) -> tuple[float, float]:
    """Continue a stopped process and wait for it to exit: (wall seconds, CPU seconds it used
    meanwhile). The CPU before is read from /proc (clock ticks, never more than it used); the
    CPU at exit is the kernel's exact account (wait4), so a short run never reads as 0."""
    cpu_before = cpu_seconds(proc.pid)
    started = time.perf_counter()
    os.kill(proc.pid, signal.SIGCONT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{what} exited {proc.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime - cpu_before


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def rebuild_limit(store: Store, target: str = "limit_sessions") -> float:
    """Seconds for the floor of a full rebuild of sessions (see raw_pymongo.fold_limit)."""
    from evstream import sessions

    return raw_pymongo.fold_limit(store, sessions.fold, target)


def bench_rebuild(scratch: Scratch, events: int, streams: int, progress: Progress) -> BenchResult:
    """A full rebuild of `sessions` against the limit: sorted scan, fold, insert_many."""
    from evstream.projection import plan_rebuild, rebuild
    from evstream.sessions import projection as sessions

    progress("rebuild: writing the log")
    store = scratch.store("rebuild")
    ensure_indexes(store)
    docs = documents_for(synthetic_lines(events, streams, types=FOLD_TYPES))
    raw_pymongo.insert_batches(store, docs)
    for side in scratch.sides():
        if side == "raw":
            progress("rebuild: the limit (scan + fold + insert_many)")
            cpu = time.process_time()
            raw = rebuild_limit(store)
            raw_cpu = time.process_time() - cpu
        else:
            progress("rebuild: evstream rebuild-sessions")
            cpu = time.process_time()
            started = time.perf_counter()
            report = rebuild(store, plan_rebuild(store, sessions, incremental=False))
            took = time.perf_counter() - started
            took_cpu = time.process_time() - cpu
    sessions_made = raw_pymongo.count(store, "sessions")
    if report.streams != sessions_made:
        raise RuntimeError(f"rebuild made {sessions_made} sessions for {report.streams} streams")
    return BenchResult(
        "rebuild",
        events,
        took,
        raw,
        "sorted scan + fold + insert_many",
        {"streams": report.streams},
        evstream_cpu=took_cpu,
        raw_cpu=raw_cpu,
    )


def bench_watch(scratch: Scratch, events: int, streams: int, progress: Progress) -> BenchResult:
    """`evstream watch -o json` against a raw pymongo change-stream loop, each a real process:
    the time to consume a backlog of `events` changes, and insert-to-line latency."""
    latency_events = min(events, 300)
    lat: dict[str, list[float]] = {}
    rate: dict[str, float] = {}
    cpu_us: dict[str, float] = {}
    for kind in scratch.sides():
        progress(f"watch: {kind} latency, {latency_events} events one at a time")
        store = scratch.store(f"watch_lat_{kind}")
        lat[kind] = latency_round(kind, store.uri, store.db.name, latency_events, seed=1)
        progress(f"watch: {kind} throughput, a backlog of {events:,} changes")
        store = scratch.store(f"watch_tp_{kind}")
        rate[kind], cpu_us[kind] = throughput_round(kind, store.uri, store.db.name, events)
        # The same log, read whole (watch --from start --no-follow): the first event and
        # the backlog's.
        progress(f"watch: {kind} reading the log of {events + 1:,} events")
        replay = f"{kind}-replay"
        rate[replay], cpu_us[replay] = replay_round(replay, store.uri, store.db.name, events + 1)
    extra = {
        "p50_ms": round(percentile(lat["evstream"], 0.5), 2),
        "p99_ms": round(percentile(lat["evstream"], 0.99), 2),
        "raw_p50_ms": round(percentile(lat["raw"], 0.5), 2),
        "raw_p99_ms": round(percentile(lat["raw"], 0.99), 2),
        "replay_cpu_us_per_event": round(cpu_us["evstream-replay"], 2),
        "raw_replay_cpu_us_per_event": round(cpu_us["raw-replay"], 2),
        "replay_cpu_ratio": round(cpu_us["evstream-replay"] / cpu_us["raw-replay"], 3)
        if cpu_us["raw-replay"]
        else None,
    }
    return BenchResult(
        "watch",
        events,
        events / rate["evstream"],
        events / rate["raw"],
        "change-stream loop",
        extra,
        evstream_cpu=cpu_us["evstream"] * events / 1e6,
        raw_cpu=cpu_us["raw"] * events / 1e6,
    )


# --- whole processes, as a user sees them -------------------------------------------------------


def measure_process(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a process from start to exit; raises if it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        error = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
        raise RuntimeError(f"{argv[2:5]} exited {proc.returncode}: {error}")
    if proc.stderr:
        proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime


def bench_publish_processes(
    scratch: Scratch, events: int, streams: int, progress: Progress
) -> BenchResult:
    """`evstream publish --file F` against a minimal pymongo loader of the same file, each a
    process timed from start to exit."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".ndjson") as file:
        file.write(synthetic_lines(events, streams))
        file.flush()
        for side in scratch.sides():
            store = scratch.store(f"publish_{side}_proc")
            ensure_indexes(store)
            env = {"EVSTREAM_URI": store.uri, "EVSTREAM_DB": store.db.name}
            progress(f"publish: {side} as a process")
            if side == "raw":
                argv = [sys.executable, "-c", raw_pymongo.LOADER, store.uri, store.db.name]
                raw, raw_cpu = measure_process([*argv, file.name], env)
            else:
                argv = [sys.executable, "-m", "evstream", "publish", "--file", file.name]
                took, took_cpu = measure_process([*argv, "-o", "json"], env)
            if raw_pymongo.count(store, "events") != events:
                raise RuntimeError(f"the {side} publisher did not store {events} events")
    return BenchResult(
        "publish",
        events,
        took,
        raw,
        "a pymongo loader process (json.loads, insert_many of 1,000)",
        {"processes": True},
        evstream_cpu=took_cpu,
        raw_cpu=raw_cpu,
    )


def bench_rebuild_processes(
    scratch: Scratch, events: int, streams: int, progress: Progress
) -> BenchResult:
    """`evstream rebuild-sessions` against a pymongo scan + fold + insert_many program, each a
    process timed from start to exit, over the same log."""
    progress("rebuild: writing the log")
    store = scratch.store("rebuild_proc")
    ensure_indexes(store)
    raw_pymongo.insert_batches(store, documents_for(synthetic_lines(events, streams)))
    env = {"EVSTREAM_URI": store.uri, "EVSTREAM_DB": store.db.name}
    for side in scratch.sides():
        progress(f"rebuild: {side} as a process")
        if side == "raw":
            argv = [sys.executable, "-c", raw_pymongo.REBUILDER, store.uri, store.db.name]
            raw, raw_cpu = measure_process(argv, env)
        else:
            argv = [sys.executable, "-m", "evstream", "rebuild-sessions", "-o", "json"]
            took, took_cpu = measure_process(argv, env)
    return BenchResult(
        "rebuild",
        events,
        took,
        raw,
        "a pymongo scan + fold + insert_many process",
        {"processes": True},
        evstream_cpu=took_cpu,
        raw_cpu=raw_cpu,
    )


def bench_exec(scratch: Scratch, events: int, streams: int, progress: Progress) -> BenchResult:
    """`watch --exec 'cat > /dev/null'` (at-least-once delivery to a handler) against the plain
    `watch -o json > /dev/null`, both reading the same backlog with --no-follow, as processes.

    The main figure is --batch 500; --batch 1 (one handler process per change) is measured on
    at most 2,000 changes and reported as events/s beside it.
    """
    progress("exec: writing the log")
    store = scratch.store("exec")
    ensure_indexes(store)
    # A backlog of the last hour, as a handler catching up reads it.
    raw_pymongo.insert_batches(store, documents_for(synthetic_lines(events, streams), 3600))
    env = {"EVSTREAM_URI": store.uri, "EVSTREAM_DB": store.db.name}
    watch = [sys.executable, "-m", "evstream", "watch", "--from", "start", "--no-follow"]

    def handler(name: str, batch: int, limit: int | None = None) -> list[str]:
        argv = [*watch, "--checkpoint", name, "--exec", "cat > /dev/null", "--batch", str(batch)]
        return [*argv, "--limit", str(limit)] if limit else argv

    for side in scratch.sides():
        if side == "raw":
            progress("exec: plain watch -o json > /dev/null")
            raw, raw_cpu = measure_process([*watch, "-o", "json"], env)
        else:
            progress("exec: watch --exec 'cat > /dev/null' --batch 500")
            took, took_cpu = measure_process(handler("bench500", 500), env)
    few = min(events, 2000)
    progress(f"exec: --batch 1 on {few:,} changes")
    one, _ = measure_process(handler("bench1", 1, few), env)
    return BenchResult(
        "exec",
        events,
        took,
        raw,
        "plain watch -o json > /dev/null, a process",
        {"batch": 500, "batch1_events_per_second": round(few / one, 1)},
        evstream_cpu=took_cpu,
        raw_cpu=raw_cpu,
    )


PROCESS_RUNNERS: dict[str, Callable[[Scratch, int, int, Progress], BenchResult]] = {
    "publish": bench_publish_processes,
    "rebuild": bench_rebuild_processes,
    "watch": bench_watch,  # its two sides are processes already
    "exec": bench_exec,
}

RUNNERS: dict[str, Callable[[Scratch, int, int, Progress], BenchResult]] = {
    "publish": bench_publish,
    "rebuild": bench_rebuild,
    "watch": bench_watch,
    "exec": bench_exec,
}


def run(
    settings: Settings,
    workloads: list[str],
    events: int,
    streams: int,
    keep: bool,
    progress: Progress,
    rounds: int = 1,
    notice: Progress | None = None,
    processes: bool = False,
) -> list[BenchResult]:
    """Run each workload `rounds` times in scratch databases; the median round of each.

    `progress` hears each step as it starts (a round's timed steps once their setup is done);
    `notice` (by default `progress` too) which scratch databases are used, and which were kept.
    """
    say = notice or progress
    run_id = new_run()
    say(f"scratch databases: evstream_bench_{run_id}_*, {'kept' if keep else 'dropped'} at the end")
    results = []
    kept: set[str] = set()
    for name in workloads:
        runs = []
        for i in range(rounds):
            scratch = Scratch(settings, keep, evstream_first=i % 2 == 1, run=run_id)
            try:
                runners = PROCESS_RUNNERS if processes else RUNNERS
                runs.append(
                    runners[name](
                        scratch,
                        events,
                        streams,
                        lambda s, i=i: progress(f"{s} (round {i + 1}/{rounds})"),
                    )
                )
            finally:
                kept.update(scratch.close())
        results.append(median_result(runs))
    if kept:
        say(f"kept the scratch databases: {', '.join(sorted(kept))}")
    return results


def median_result(runs: list[BenchResult]) -> BenchResult:
    """The median of several rounds: median evstream time and median raw time."""

    def mid(values: list[float]) -> float:
        ordered = sorted(values)
        n = len(ordered)
        return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2

    first = runs[0]
    extra = dict(first.extra)
    for name in ("replay_cpu_us_per_event", "raw_replay_cpu_us_per_event"):
        if all(r.extra.get(name) is not None for r in runs):
            extra[name] = round(mid([r.extra[name] for r in runs]), 2)
    if extra.get("raw_replay_cpu_us_per_event"):
        extra["replay_cpu_ratio"] = round(
            extra["replay_cpu_us_per_event"] / extra["raw_replay_cpu_us_per_event"], 3
        )
    if len(runs) > 1:
        extra["rounds"] = len(runs)
    cpus = [(r.evstream_cpu, r.raw_cpu) for r in runs]
    has_cpu = all(a is not None and b is not None for a, b in cpus)
    return BenchResult(
        first.workload,
        first.events,
        mid([r.evstream_seconds for r in runs]),
        mid([r.raw_seconds for r in runs]),
        first.raw_label,
        extra,
        evstream_cpu=mid([a for a, _ in cpus]) if has_cpu else None,  # type: ignore[misc]
        raw_cpu=mid([b for _, b in cpus]) if has_cpu else None,  # type: ignore[misc]
    )
