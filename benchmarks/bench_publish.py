"""Bulk publish from a file against raw pymongo insert_many of the same documents.

    python benchmarks/bench_publish.py [--events 30000] [--streams 3000] [--rounds 3] [--uri URI]

Each round publishes the file into a fresh database with `evstream publish --file` (a real
process, so start-up is counted) and in-process through publishing.publish_stream, and inserts
the same documents with insert_many in batches of 1,000 into another fresh database on the same
server, into a collection with the same indexes as evstream's log (each index is work the server
does per insert). Prints medians and ratios, and evstream's peak RSS for the file and for one ten
times larger (it must stay flat).
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
from evstream.store import connect, ensure_indexes  # noqa: E402


def write_file(path: Path, events: int, streams: int) -> None:
    """The synthetic NDJSON log of `evstream bench`, interleaved across streams."""
    path.write_bytes(synthetic_lines(events, streams))


def raw_insert(coll: Collection, docs: list[dict]) -> None:
    for i in range(0, len(docs), 1000):
        coll.insert_many(docs[i : i + 1000], ordered=True)


def publish_process(
    uri: str, db: str, path: str, stdin: Path | None = None
) -> tuple[float, int, str]:
    """`evstream publish --file PATH` as a real process: (seconds, peak RSS KiB, stdout)."""
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
        raw_times, cli_times, lib_times = [], [], []
        for _ in range(args.rounds):
            docs = documents_for(path.read_bytes())
            db = f"bench_raw_{uuid.uuid4().hex[:8]}"
            store = connect(Settings(uri=uri, db=db), lambda message: None)
            ensure_indexes(store)  # untimed, as for evstream below
            raw_times.append(timed(lambda c=store.events, docs=docs: raw_insert(c, docs)))
            store.close()
            client.drop_database(db)

            db = f"bench_cli_{uuid.uuid4().hex[:8]}"
            seconds, _, out = publish_process(uri, db, str(path))
            assert json.loads(out)["published"] == args.events, out
            cli_times.append(seconds)
            client.drop_database(db)

            db = f"bench_lib_{uuid.uuid4().hex[:8]}"
            store = connect(Settings(uri=uri, db=db), lambda message: None)
            ensure_indexes(store)
            with path.open("rb") as source:
                lib_times.append(timed(lambda s=store, f=source: publish_stream(s, f)))
            assert store.events.count_documents({}) == args.events
            store.close()
            client.drop_database(db)

        raw, cli, lib = median(raw_times), median(cli_times), median(lib_times)
        print(
            f"bulk publish: {args.events:,} events over {args.streams:,} streams, "
            f"median of {args.rounds} rounds, server {uri.split('/?')[0]}"
        )
        print(f"{'':34}{'seconds':>9}{'events/s':>11}{'vs raw':>9}")
        for name, value in (
            ("raw pymongo insert_many (1,000s)", raw),
            ("evstream publish --file (process)", cli),
            ("evstream publish_stream (library)", lib),
        ):
            print(f"{name:34}{value:9.2f}{args.events / value:11,.0f}{value / raw:8.2f}x")

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
