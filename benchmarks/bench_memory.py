"""Peak RSS of evstream's bulk commands at two sizes of input: it must stay flat in the input.

    python benchmarks/bench_memory.py [--events 30000,300000] [--streams-per 10] [--uri URI]

For each size, in fresh databases of one server (a throwaway nx-27017 unless --uri):
`publish --file -` of that many NDJSON lines from standard input (streamed), `publish --file
PATH` of the same file (checked first, the parsed events of its first 16 MiB kept), `watch
--from start --no-follow -o json` of the log it made, and `rebuild-sessions` of it, each as a
process of its own, its peak RSS read by the wrapper that ran it. Prints a table (and JSON
lines with -o json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import run_measured, server  # noqa: E402

from evstream.bench import synthetic_lines  # noqa: E402

PY = sys.executable


def measure(uri: str, events: int, streams: int) -> dict[str, float]:
    """Peak RSS in MiB of each command over a log of `events` events."""
    db = f"evstream_mem_{uuid.uuid4().hex[:8]}"
    env = {"EVSTREAM_URI": uri, "EVSTREAM_DB": db}
    found: dict[str, float] = {}
    with tempfile.NamedTemporaryFile(suffix=".ndjson") as file:
        file.write(synthetic_lines(events, streams))
        file.flush()
        path = Path(file.name)
        # Into a database of its own, streamed from standard input (nothing kept).
        stdin_env = {**env, "EVSTREAM_DB": db + "_stdin"}
        _, rss, _ = run_measured(PUBLISH_STDIN, stdin_env, stdin=path)
        found["publish --file - (stdin)"] = rss / 1024
        commands = {
            "publish --file PATH (checked)": ["publish", "--file", file.name],
            "watch --from start --no-follow": ["watch", "--from", "start", "--no-follow"],
            "rebuild-sessions": ["rebuild-sessions"],
        }
        for name, args in commands.items():
            _, rss, _ = run_measured([PY, "-m", "evstream", *args, "-o", "json"], env)
            found[name] = rss / 1024
    for name in (db, db + "_stdin"):
        run_measured([PY, "-c", DROP, uri, name], {})
    return found


PUBLISH_STDIN = [PY, "-m", "evstream", "publish", "--file", "-", "-o", "json"]


DROP = "import sys, pymongo; pymongo.MongoClient(sys.argv[1]).drop_database(sys.argv[2])"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default="30000,300000")
    parser.add_argument("--streams-per", type=int, default=10, help="events per stream")
    parser.add_argument("--uri", default=None)
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = parser.parse_args()
    sizes = [int(n) for n in args.events.split(",")]
    with server(args.uri) as uri:
        rows = {n: measure(uri, n, max(1, n // args.streams_per)) for n in sizes}
    if args.output == "json":
        for n, found in rows.items():
            print(json.dumps({"events": n, **{k: round(v, 1) for k, v in found.items()}}))
        return
    names = list(next(iter(rows.values())))
    print(f"peak RSS, MiB        {'  '.join(f'{n:>10,}' for n in sizes)}   growth")
    for name in names:
        values = [rows[n][name] for n in sizes]
        growth = values[-1] / values[0] - 1
        print(f"  {name:<32}{'  '.join(f'{v:10.1f}' for v in values)}   {growth:+.0%}")


if __name__ == "__main__":
    main()
