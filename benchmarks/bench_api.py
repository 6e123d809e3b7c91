"""The Python API against raw pymongo doing the same work, in the same process and run.

    python benchmarks/bench_api.py [--events 30000] [--streams 3000] [--calls 2000]
                                   [--rounds 3] [--uri URI]

Two comparisons, each round in fresh databases with the log's indexes (made untimed for both
sides), the order of the sides alternating between rounds:

- bulk, into an empty log: `Client.append_many` of the NDJSON lines of `evstream bench` (each
  parsed with json.loads as it is taken) against the minimal pymongo loader of `evstream bench`
  (evstream.bench.documents_for: parse, number each stream's versions, build the documents;
  then evstream.storage.raw.insert_batches: insert_many in ordered batches of 1,000).
  Target: client CPU per event within 1.2x.
- one event per call, on a warm client: `Client.append(type, stream, data)` against what a
  user writes without evstream: find_one of the stream's highest version, then insert_one of
  the next (evstream.storage.raw.RawLog), the two sides taking turns in blocks of 50 calls.
  Target: client CPU per call within 1.3x.

Client CPU is this process's (time.process_time: every thread, the API's batch writer
included); the server runs in its own process. Both sides write in ordered batches of 1,000.
A first bulk round of each side warms up and is not counted. Prints the medians of the rounds,
and each side's least CPU: on a machine busy with other work, noise only adds to CPU time
(look at `uptime` before a run).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, server  # noqa: E402

import evstream  # noqa: E402
from evstream.bench import documents_for, synthetic_lines  # noqa: E402
from evstream.events import new_event_id  # noqa: E402
from evstream.storage import ensure_indexes, now_utc  # noqa: E402
from evstream.storage.raw import RawLog, insert_batches  # noqa: E402

Measured = tuple[float, float]  # (wall seconds, client CPU seconds)


def measure(work: Callable[[], object]) -> Measured:
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def bulk_raw(log: evstream.Client, lines: bytes) -> Measured:
    store = log._store  # the same server and indexes; the loader's own work below

    def load() -> None:
        insert_batches(store, documents_for(lines))

    return measure(load)


def bulk_api(log: evstream.Client, lines: bytes) -> Measured:
    def load() -> None:
        summary = log.append_many(json.loads(line) for line in lines.splitlines())
        assert summary["published"] == lines.count(b"\n"), summary

    return measure(load)


def calls(count: int, streams: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("login", f"user-{i % streams:06d}", {"username": f"user-{i % streams:06d}", "n": i})
        for i in range(count)
    ]


def one_per_call(
    uri: str, work: list[tuple[str, str, dict[str, Any]]], block: int
) -> tuple[Measured, Measured]:
    """Both sides on warm clients, each into its own fresh database, taking turns in blocks of
    `block` calls, so that a busy machine's drift weighs on both alike: (raw, api)."""
    raw_db, api_db = (f"bench_api_one_{side}_{uuid.uuid4().hex[:8]}" for side in ("raw", "api"))
    totals = {"raw": [0.0, 0.0], "api": [0.0, 0.0]}
    with evstream.connect(uri, api_db) as log, RawLog(uri, raw_db) as raw:
        with evstream.connect(uri, raw_db) as indexes:
            indexes.append("warm", "warm-up")  # the raw side's log has the same indexes
        log.append("warm", "warm-up")  # warm: connected, indexes checked
        raw.events.find_one({})

        def raw_calls(part: list[tuple[str, str, dict[str, Any]]]) -> None:
            for kind, stream, data in part:
                head = raw.events.find_one(
                    {"stream": stream}, sort=[("version", -1)], projection={"version": 1}
                )
                version = head["version"] + 1 if head else 1
                raw.insert_one(
                    {
                        "_id": new_event_id(),
                        "stream": stream,
                        "version": version,
                        "type": kind,
                        "data": data,
                        "ts": now_utc(),
                    }  # fmt: skip
                )

        def api_calls(part: list[tuple[str, str, dict[str, Any]]]) -> None:
            for kind, stream, data in part:
                log.append(kind, stream, data)

        for i in range(0, len(work), block):
            part = work[i : i + block]
            sides = (("raw", raw_calls), ("api", api_calls))
            for side, run in sides if (i // block) % 2 == 0 else reversed(sides):
                wall, cpu = measure(functools.partial(run, part))
                totals[side][0] += wall
                totals[side][1] += cpu
        for db in (raw_db, api_db):
            raw.client.drop_database(db)
    return (totals["raw"][0], totals["raw"][1]), (totals["api"][0], totals["api"][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--streams", type=int, default=3_000)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uri", default=None, help="a server to use instead of a fresh nx-27017")
    args = parser.parse_args()

    lines = synthetic_lines(args.events, args.streams)
    work = calls(args.calls, min(args.streams, args.calls))
    names = ("bulk raw", "bulk api", "one raw", "one api")
    results: dict[str, list[Measured]] = {name: [] for name in names}
    with server(args.uri) as uri:
        # Round 0 warms both sides up (imports, connections, the caches of names and field-name
        # sets, the server's own start) and is not counted.
        for i in range(args.rounds + 1):
            order = ("raw", "api") if i % 2 == 0 else ("api", "raw")
            for side in order:
                db = f"bench_api_{side}_{uuid.uuid4().hex[:8]}"
                with evstream.connect(uri, db) as log:
                    # The log's indexes, made untimed for both sides, on an empty log: the
                    # loader numbers versions from 1, right only for streams that are new.
                    ensure_indexes(log._store)
                    measured = (bulk_raw if side == "raw" else bulk_api)(log, lines)
                    if i:
                        results[f"bulk {side}"].append(measured)
                    log._store.client.drop_database(db)
            if not i:
                continue
            raw_one, api_one = one_per_call(uri, work, block=50)
            results["one raw"].append(raw_one)
            results["one api"].append(api_one)

    def row(name: str, per: int) -> tuple[float, float, float]:
        """Per event or call: median wall, median CPU, least CPU (a busy machine only adds)."""
        wall = median([w for w, _ in results[name]])
        cpus = [c for _, c in results[name]]
        return wall / per * 1e6, median(cpus) / per * 1e6, min(cpus) / per * 1e6

    print(f"Python API vs raw pymongo, server {uri.split('/?')[0]}, {args.rounds} rounds")
    print(f"{'':50}{'wall µs':>9}{'CPU µs':>9}{'ratio':>7}{'least CPU':>11}{'ratio':>7}")
    for heading, raw_name, api_name, per, target in (
        (f"bulk: {args.events:,} events over {args.streams:,} streams (per event)",
         "bulk raw", "bulk api", args.events, 1.2),
        (f"one event per call: {args.calls:,} calls (per call)",
         "one raw", "one api", args.calls, 1.3),
    ):  # fmt: skip
        print(f"{heading} (medians; target {target}x)")
        raw_wall, raw_cpu, raw_least = row(raw_name, per)
        api_wall, api_cpu, api_least = row(api_name, per)
        label = "append_many" if raw_name == "bulk raw" else "append"
        raw_label = "documents_for + insert_batches" if label == "append_many" else (
            "find_one (head) + insert_one")  # fmt: skip
        print(
            f"  {'raw pymongo ' + raw_label:48}{raw_wall:9.1f}{raw_cpu:9.1f}{1:6.2f}x"
            f"{raw_least:11.1f}{1:6.2f}x"
        )
        print(
            f"  {'evstream Client.' + label:48}{api_wall:9.1f}{api_cpu:9.1f}"
            f"{api_cpu / raw_cpu:6.2f}x{api_least:11.1f}{api_least / raw_least:6.2f}x"
        )


if __name__ == "__main__":
    main()
