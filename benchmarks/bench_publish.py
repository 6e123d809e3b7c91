"""Bulk publish from a file against raw pymongo doing the same work, on the same server.

    python benchmarks/bench_publish.py [--events 30000] [--streams 3000] [--rounds 3] [--uri URI]

Two comparisons per round, each in fresh databases on one server, into collections with the
same indexes as evstream's log (each index is work the server does per insert):

- in-process: publishing.publish_stream reading the file, against insert_many in batches of
  1,000 of documents built before the clock starts (the strictest baseline: it parses nothing);
- as processes: `evstream publish --file` against a plain pymongo script that reads the same
  file, parses each line, numbers the versions and inserts in batches of 1,000 (interpreter
  start-up, imports and parsing counted on both sides).

Prints medians and ratios, and evstream's peak RSS for the file and for one ten times larger
(it must stay flat).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

import pymongo
from pymongo.collection import Collection

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, run_measured, server, timed  # noqa: E402

from evstream.bench import documents_for, synthetic_lines  # noqa: E402
from evstream.publishing import publish_stream  # noqa: E402
from evstream.settings import Settings  # noqa: E402
from evstream.storage import connect, ensure_indexes  # noqa: E402
from evstream.storage.raw import LOADER  # noqa: E402


def write_file(path: Path, events: int, streams: int) -> None:
    """The synthetic NDJSON log of `evstream bench`, interleaved across streams."""
    path.write_bytes(synthetic_lines(events, streams))


def raw_insert(coll: Collection, docs: list[dict]) -> None:
    for i in range(0, len(docs), 1000):
        coll.insert_many(docs[i : i + 1000], ordered=True)


# What a user writes without evstream: no validation, no idempotency, no concurrency checks.
def with_indexes(uri: str, db: str) -> None:
    """The log's indexes made beforehand, untimed, for both process sides alike."""
    store = connect(Settings(uri=uri, db=db), lambda message: None)
    ensure_indexes(store)
    store.close()


def raw_process(uri: str, db: str, path: str) -> float:
    """The plain pymongo loader (evstream.storage.raw.LOADER, as `bench --processes` runs it)
    as a real process: seconds."""
    with_indexes(uri, db)
    return run_measured([sys.executable, "-c", LOADER, uri, db, path], {})[0]


def publish_process(
    uri: str, db: str, path: str, stdin: Path | None = None
) -> tuple[float, int, str]:
    """`evstream publish --file PATH` as a real process: (seconds, peak RSS KiB, stdout)."""
    with_indexes(uri, db)
    argv = [sys.executable, "-m", "evstream", "--db", db, "-o", "json", "publish", "--file", path]
    return run_measured(argv, {"EVSTREAM_URI": uri}, stdin=stdin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--streams", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uri", default=None, help="a server to use instead of a fresh nx-27017")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, server(args.uri) as uri:
        path = Path(tmp) / "events.ndjson"
        write_file(path, args.events, args.streams)
        client: pymongo.MongoClient = pymongo.MongoClient(uri)
        times: dict[str, list[float]] = {"raw": [], "lib": [], "script": [], "cli": []}

        def run_raw(db: str) -> float:
            docs = documents_for(path.read_bytes())
            store = connect(Settings(uri=uri, db=db), lambda message: None)
            ensure_indexes(store)  # untimed, as for publish_stream below
            seconds = timed(lambda: raw_insert(store.events, docs))
            store.close()
            return seconds

        def run_lib(db: str) -> float:
            store = connect(Settings(uri=uri, db=db), lambda message: None)
            ensure_indexes(store)
            with path.open("rb") as source:
                seconds = timed(lambda: publish_stream(store, source))
            store.close()
            return seconds

        def run_cli(db: str) -> float:
            seconds, _, out = publish_process(uri, db, str(path))
            assert json.loads(out)["published"] == args.events, out
            return seconds

        runners = {
            "raw": run_raw,
            "lib": run_lib,
            "script": lambda db: raw_process(uri, db, str(path)),
            "cli": run_cli,
        }
        for i in range(args.rounds):
            # Alternate the order, so a server that drifts during the run weighs on all evenly.
            for name in list(runners) if i % 2 == 0 else reversed(runners):
                db = f"bench_{name}_{uuid.uuid4().hex[:8]}"
                times[name].append(runners[name](db))
                assert client[db].events.count_documents({}) == args.events
                client.drop_database(db)

        raw, lib, script, cli = (median(times[name]) for name in runners)
        print(
            f"bulk publish: {args.events:,} events over {args.streams:,} streams, "
            f"median of {args.rounds} rounds, server {uri.split('/?')[0]}"
        )
        print(f"{'':36}{'seconds':>9}{'events/s':>11}{'vs raw':>9}")
        for heading, rows in (
            (
                "in-process (raw: documents built before the clock starts)",
                (
                    ("raw pymongo insert_many (1,000s)", raw, raw),
                    ("evstream publish_stream (library)", lib, raw),
                ),
            ),
            (
                "as processes reading the file (start-up and parsing counted)",
                (
                    ("raw pymongo script", script, script),
                    ("evstream publish --file", cli, script),
                ),
            ),
        ):
            print(heading)
            for name, value, base in rows:
                print(f"  {name:34}{value:9.2f}{args.events / value:11,.0f}{value / base:8.2f}x")

        if not args.skip_memory:
            big = Path(tmp) / "big.ndjson"
            write_file(big, args.events * 10, args.streams)
            rss = []
            for source in (path, big):
                db = f"bench_mem_{uuid.uuid4().hex[:8]}"
                _, peak, _ = publish_process(uri, db, "-", stdin=source)
                client.drop_database(db)
                rss.append(peak)
            print(
                f"peak RSS, publish --file - of {args.events:,} events: {rss[0] / 1024:.1f} MiB; "
                f"of {args.events * 10:,}: {rss[1] / 1024:.1f} MiB ({rss[1] / rss[0]:.2f}x)"
            )


if __name__ == "__main__":
    main()
