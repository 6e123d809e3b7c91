"""One invocation as a user times it: a single `evstream publish` against the smallest pymongo
program that inserts one event and exits at once, on the same warm embedded dev store; and how
long a refused connection takes to exit 3.

    python benchmarks/bench_invocation.py [--runs 10]

Each figure is the median wall time of fresh processes; evstream and the minimal program run in
turns, and the difference is the median of each turn's difference. Both are measured twice: as
on a user's machine (Python writes and reuses .pyc files for evstream's own modules; one warm-up
run writes them) and with PYTHONDONTWRITEBYTECODE=1 (evstream's modules recompiled on every run,
as in a sandbox that forbids writing them). Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
DB = "evstream_bench_invocation"
# Its own database: evstream's unique {stream, version} index would refuse the minimal program's
# repeated inserts there.
MINIMAL_DB = "evstream_bench_minimal"

# The floor: connect, insert one event, exit without waiting for pymongo's threads.
MINIMAL = """\
import os, sys, datetime, pymongo
c = pymongo.MongoClient(sys.argv[1])
c[sys.argv[2]].events.insert_one({"stream": "bob", "type": "login", "version": 1, "data": {},
    "ts": datetime.datetime.now(datetime.timezone.utc)})
os._exit(0)
"""


def evstream_argv() -> list[str]:
    """The installed `evstream` script next to this Python, else `python -m evstream`."""
    script = Path(PY).parent / "evstream"
    return [str(script)] if script.exists() else [PY, "-m", "evstream"]


def evstream_package() -> str:
    """The directory of the evstream package these processes import."""
    found = subprocess.run(
        [
            PY,
            "-c",
            "import evstream, os; print(os.path.dirname(os.path.realpath(evstream.__file__)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.strip()


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall time and exit code of one fresh process (output discarded)."""
    started = time.perf_counter()
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False
    )
    return time.perf_counter() - started, done.returncode


def median_seconds(argv: list[str], runs: int, env: dict[str, str]) -> tuple[float, set[int]]:
    """Median wall time of `runs` fresh processes, and the exit codes seen."""
    results = [timed(argv, env) for _ in range(runs)]
    return statistics.median(t for t, _ in results), {code for _, code in results}


def refused_uri() -> str:
    """A URI whose port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"mongodb://127.0.0.1:{port}/"


def row(name: str, seconds: float, codes: set[int]) -> None:
    """One line of figures."""
    print(f"  {name:<44}{seconds * 1000:7.0f} ms   exit {', '.join(map(str, sorted(codes)))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    evstream = evstream_argv()
    home = tempfile.mkdtemp(prefix="evstream-bench-")
    base = {k: v for k, v in os.environ.items() if k not in ("EVSTREAM_URI", "MONGODB_URI")}
    base["EVSTREAM_HOME"] = home
    # Compiled modules go to a cache of this run's own (PYTHONPYCACHEPREFIX), so that the first
    # mode writes and reuses them as a user's machine does, and the second finds every module's
    # but evstream's own: what a sandbox with PYTHONDONTWRITEBYTECODE=1 and a fresh checkout sees.
    pycache = Path(home) / "pycache"
    cached = {k: v for k, v in base.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = str(pycache)
    modes = {
        ".pyc written (a user's machine)": cached,
        "PYTHONDONTWRITEBYTECODE=1, evstream compiled each run": {
            **cached,
            "PYTHONDONTWRITEBYTECODE": "1",
        },
    }
    try:
        started = subprocess.run(
            [*evstream, "server", "start", "-o", "json"],
            capture_output=True,
            text=True,
            env=base,
            check=True,
        )
        uri = json.loads(started.stdout)["uri"]
        publish = [*evstream, "--db", DB, "publish", "login", "-s", "alice", "-o", "json"]
        minimal = [PY, "-c", MINIMAL, uri, MINIMAL_DB]
        refused = [*evstream, "--uri", refused_uri(), "publish", "login", "-s", "alice"]
        print(f"median of {args.runs} fresh processes each, on the embedded dev store ({uri})")
        for mode, env in modes.items():
            for argv in (publish, minimal, refused):  # warm-up: .pyc files, indexes, caches
                timed(argv, env)
            if "PYTHONDONTWRITEBYTECODE" in env:  # forget evstream's compiled modules
                shutil.rmtree(
                    pycache / Path(evstream_package()).relative_to("/"), ignore_errors=True
                )
            # Interleaved, so that both sides see the same load on a shared machine.
            rounds = [(timed(publish, env), timed(minimal, env)) for _ in range(args.runs)]
            ours = statistics.median(t for (t, _), _ in rounds)
            floor = statistics.median(t for _, (t, _) in rounds)
            gap = statistics.median(a - b for (a, _), (b, _) in rounds)
            codes = {code for (_, code), _ in rounds}
            floor_codes = {code for _, (_, code) in rounds}
            gone, refused_codes = median_seconds(refused, args.runs, env)
            print(f"{mode}:")
            row("evstream publish login -s alice -o json", ours, codes)
            row("minimal pymongo insert_one + os._exit", floor, floor_codes)
            print(f"  {'difference (median of the paired runs)':<44}{gap * 1000:+7.0f} ms")
            row("refused connection (--uri, nothing there)", gone, refused_codes)
    finally:
        subprocess.run([*evstream, "server", "stop"], env=base, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
