"""What liveness costs a busy `watch --checkpoint`: client CPU per event, this tree against a
tree without liveness, rounds alternating on the same server (docs/operating.md).

    python benchmarks/bench_liveness.py --base DIR [--events 5000] [--rounds 5] [--uri URI]

DIR holds the evstream sources to compare with (e.g. `git archive <commit> | tar -x -C DIR`
of the commit before liveness). Each round is evstream.bench's throughput round for
`watch --checkpoint`: the watcher opens its stream, is stopped (SIGSTOP), the events are
inserted, it is continued and consumes them into /dev/null (`--limit`, so it exits); its CPU is
the kernel's account at its exit. Medians over rounds, and the difference in per cent.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pymongo

sys.path.insert(0, str(Path(__file__).parent))
from _common import median, server  # noqa: E402

from evstream.bench import throughput_round  # noqa: E402

HERE = Path(__file__).resolve().parent.parent


def round_with(source: Path, uri: str, events: int) -> tuple[float, float]:
    """One throughput round of `watch --checkpoint` with evstream imported from `source`."""
    os.environ["PYTHONPATH"] = str(source)
    db = f"bench_liveness_{uuid.uuid4().hex[:6]}"
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
    try:
        return throughput_round("evstream-checkpoint", uri, db, events)
    finally:
        client.drop_database(db)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uri")
    args = parser.parse_args()
    base = args.base.resolve()
    if not (base / "evstream" / "__init__.py").exists():
        raise SystemExit(f"{base} holds no evstream sources")
    cpu: dict[str, list[float]] = {"without": [], "with": []}
    rate: dict[str, list[float]] = {"without": [], "with": []}
    with server(args.uri) as uri, tempfile.TemporaryDirectory() as neutral:
        os.chdir(neutral)  # `python -m evstream` must not import the tree in the cwd
        for n in range(args.rounds):
            order = [("without", base), ("with", HERE)]
            for name, source in order if n % 2 == 0 else order[::-1]:
                events_per_s, us = round_with(source, uri, args.events)
                cpu[name].append(us)
                rate[name].append(events_per_s)
    for name in ("without", "with"):
        rounds = " ".join(f"{v:.1f}" for v in cpu[name])
        print(
            f"{name:>7} liveness: {median(cpu[name]):6.1f} µs CPU/event, "
            f"{median(rate[name]):8,.0f} events/s   rounds: {rounds}"
        )
    before, after = median(cpu["without"]), median(cpu["with"])
    print(f"difference: {(after - before) / before * 100:+.1f}% client CPU per event")
    per_record, per_beat = in_process()
    events_per_s = median(rate["with"])
    # Worst case: one event per batch of changes (a heartbeat check each), and a record per
    # checkpoint write (at most one per 256 events, or per second below 256 events/s).
    per_event = per_beat + per_record * min(1.0, events_per_s / 256) / events_per_s
    print(
        f"in process: a liveness record {per_record:.2f} µs, a heartbeat check between batches "
        f"{per_beat:.3f} µs; at most {per_event:.3f} µs per event, "
        f"{per_event / after * 100:.3f}% of the watch's CPU per event"
    )


def in_process() -> tuple[float, float]:
    """µs per liveness record, and per heartbeat check of a watcher between batches (not due:
    what nearly every check is), timed in this process."""
    import timeit

    from evstream.liveness import Pulse
    from evstream.watching import Hooks, Watcher, WatchOptions

    pulse = Pulse("watch", every=3600.0)
    n = 20_000
    record = timeit.timeit(pulse.record, number=n) / n * 1e6
    watcher = Watcher(None, WatchOptions(checkpoint="bench"), Hooks(deliver=lambda c: None))  # type: ignore[arg-type]
    watcher.saved_doc = {"_id": "bench"}
    assert watcher.pulse is not None
    watcher.pulse.every = 3600.0
    watcher.pulse.record()
    beat = timeit.timeit(watcher._beat, number=n * 10) / (n * 10) * 1e6
    return record, beat


if __name__ == "__main__":
    main()
