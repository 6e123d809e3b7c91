"""How fast evstream answers before it touches a server: --help, a subcommand's --help, --version,
shell completion, against `python -c "import typer"` (the floor for any Typer CLI), and how long
`evstream status` takes on the embedded dev store once it runs.

    python benchmarks/bench_startup.py [--runs 21] [--events 30000]

Each figure is the median wall time of fresh processes; ratios are against `import typer`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PY = sys.executable


def median_seconds(argv: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall time of `runs` fresh processes running argv (output discarded)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            check=False,
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--events", type=int, default=30_000, help="events for the status run")
    args = parser.parse_args()

    floor = median_seconds([PY, "-c", "import typer"], args.runs)
    bare = median_seconds([PY, "-c", "pass"], args.runs)
    rows = [("python -c pass", bare), ('python -c "import typer"', floor)]
    cases = {
        "evstream --help": ([PY, "-m", "evstream", "--help"], None),
        "evstream --version": ([PY, "-m", "evstream", "--version"], None),
        "evstream status --help": ([PY, "-m", "evstream", "status", "--help"], None),
        "completion (bash, 'evstream ')": (
            [PY, "-m", "evstream"],
            {"_EVSTREAM_COMPLETE": "complete_bash", "COMP_WORDS": "evstream ", "COMP_CWORD": "1"},
        ),
    }
    for name, (argv, env) in cases.items():
        rows.append((name, median_seconds(argv, args.runs, env)))
    print(f"median of {args.runs} fresh processes each")
    for name, seconds in rows:
        print(f"  {name:<34} {seconds * 1000:7.0f} ms   {seconds / floor:5.2f}x import typer")

    with tempfile.TemporaryDirectory(prefix="evstream-bench-") as home:
        env = {**os.environ, "EVSTREAM_HOME": home}
        env.pop("EVSTREAM_URI", None)
        env.pop("MONGODB_URI", None)
        base = [PY, "-m", "evstream"]
        try:
            seed = subprocess.run(
                [*base, "seed", "--users", str(max(args.events // 10, 1)), "-o", "json"],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            published = json.loads(seed.stdout)["published"]
            runs = max(args.runs // 4, 3)
            status = median_seconds([*base, "status", "-o", "json"], runs, env)
            estimate = median_seconds([*base, "status", "--estimate", "-o", "json"], runs, env)
            print(f"evstream status on the embedded dev store, {published:,} events:")
            print(f"  status -o json                     {status * 1000:7.0f} ms")
            print(f"  status --estimate -o json          {estimate * 1000:7.0f} ms")
        finally:
            subprocess.run([*base, "server", "stop"], env=env, capture_output=True, check=False)


if __name__ == "__main__":
    main()
