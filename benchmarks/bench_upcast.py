"""What upcasting costs per event: a one-rename chain, and an event no upcaster applies to.

    python benchmarks/bench_upcast.py [--events 200000] [--rounds 5]

In-process, no server: `Upcasters` (evstream/upcasting.py) applied to canonical events shaped
as the log's (`_id`, stream, version, type, data, meta, ts). For each case, the least time of the
rounds per event, minus the loop's own cost (the same loop calling an identity function).
Target (docs/projections.md, "Upcasting"): at most 1 µs per event for the one-rename chain.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from evstream.upcasting import Upcaster, Upcasters


def rename(event: Any) -> Any:
    return {**event, "type": "login"}


def events(n: int, kind: str) -> list[dict[str, Any]]:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return [
        {"_id": f"e{i}", "stream": f"user-{i % 500}", "version": i // 500 + 1, "type": kind,
         "data": {"user": f"u{i % 500}", "ip": "10.0.0.1"}, "meta": {},
         "ts": t0 + timedelta(milliseconds=i)}  # fmt: skip
        for i in range(n)
    ]


def best(fn: Any, batch: list[dict[str, Any]], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for e in batch:
            fn(e)
        times.append(time.perf_counter() - start)
    return min(times) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    up = Upcasters([Upcaster("user.login", rename, to="login")])
    old, current = events(args.events, "user.login"), events(args.events, "login")
    loop = best(lambda e: e, old, args.rounds)
    chain = best(up, old, args.rounds) - loop
    untouched = best(up, current, args.rounds) - loop
    bare = best(rename, old, args.rounds) - loop
    print(f"events per case: {args.events:,}, rounds: {args.rounds} (least time per event)")
    print(f"  one-rename chain          {chain * 1e6:6.3f} µs/event   (target <= 1 µs)")
    print(f"    of which the rename fn  {bare * 1e6:6.3f} µs/event   (the user's function)")
    print(f"  no upcaster applies       {untouched * 1e6:6.3f} µs/event")


if __name__ == "__main__":
    main()
