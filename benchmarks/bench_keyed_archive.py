"""What keyed projections add to `evstream archive` and `evstream erase`.

    python benchmarks/bench_keyed_archive.py [--events 30000] [--uri URI]

Two identical logs (bench_lifecycle.py's: 10 events per stream, version v of every stream in
one stretch of time) on one server. The oldest 30% of each is archived: one run
keeps `sessions` only, the other `sessions` and a keyed projection over every type keyed on
`data.n` (one key per version number, each fed by every stream), whose snapshots per key are
the extra work. Then, on the second log, the keyed projection is rebuilt in full and one stream
is erased with it loaded (its keys refolded). Prints a JSON object of figures; nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import server  # noqa: E402
from bench_lifecycle import BASE, VERSIONS, generate  # noqa: E402

from evstream.archiving import archive  # noqa: E402
from evstream.erasing import erase_streams  # noqa: E402
from evstream.projection import plan_rebuild, rebuild  # noqa: E402
from evstream.projections import Projection, builtin_projection  # noqa: E402
from evstream.settings import Settings  # noqa: E402
from evstream.storage import connect, ensure_indexes  # noqa: E402


def keyed_projection() -> Projection:
    """Per version number: how many events, and the last few users (order-sensitive)."""
    proj = Projection(
        name="by_n",
        collection="by_n",
        version=1,
        types=None,
        key="data.n",
        initial={"count": 0, "last": []},
    )

    def note(state: dict[str, Any], event: Any) -> None:
        state["count"] += 1
        state["last"] = [*state["last"], event["data"]["username"]][-3:]

    for kind in ("session.started", "login", "page.viewed", "logout"):
        proj.on(kind)(note)
    return proj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--uri", default=os.environ.get("EVSTREAM_TEST_URI"))
    args = parser.parse_args()
    streams = max(args.events // VERSIONS, 1)
    # Versions 1-3 of every stream (30% of the log) lie before the cut.
    cut = BASE + timedelta(milliseconds=4 * streams * 10)
    figures: dict[str, Any] = {"events": args.events, "streams": streams, "versions": VERSIONS}
    sessions, keyed = builtin_projection("sessions"), keyed_projection()
    with server(args.uri) as uri, tempfile.TemporaryDirectory(prefix="evs-bench-keyed-") as tmp:
        stores = []
        for name in ("bench_keyed_plain", "bench_keyed_keyed"):
            store = connect(Settings(uri=uri, db=name), lambda m: None)
            store.client.drop_database(name)
            ensure_indexes(store)
            generate(store, args.events, VERSIONS)
            stores.append(store)
        for store, kept, label in (
            (stores[0], [sessions], "sessions_only"),
            (stores[1], [sessions, keyed], "with_keyed"),
        ):
            started = time.perf_counter()
            report = archive(
                store,
                before=cut,
                path=str(Path(tmp) / f"{label}.ndjson.gz"),
                streams=None,
                projections=kept,
            )
            figures[f"archive_{label}_s"] = round(time.perf_counter() - started, 2)
            figures["moved"] = report.events
        figures["keyed_vs_sessions_only"] = round(
            figures["archive_with_keyed_s"] / figures["archive_sessions_only_s"], 2
        )
        store = stores[1]
        figures["key_snapshots"] = store.collection("evstream_archived_keys").count_documents(
            {"kind": "key"}
        )
        started = time.perf_counter()
        rebuild(store, plan_rebuild(store, keyed, incremental=False))
        figures["keyed_full_rebuild_after_archive_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        erased = erase_streams(store, [f"user-{streams // 2:07d}"], projections=[keyed])
        figures["erase_one_stream_with_keyed_s"] = round(time.perf_counter() - started, 3)
        figures["erase_refolded"] = erased["streams"][0]["refolded"]
        figures["erase_keyed_snapshots_dropped"] = erased["streams"][0]["keyed_snapshots_dropped"]
        for s in stores:
            s.client.drop_database(s.db.name)
            s.close()
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
