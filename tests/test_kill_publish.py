"""kill -9 of a bulk publish at seeded random moments: nothing partial, and a re-run completes it."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from typing import Any

from conftest import write_numbered_events
from waiting import wait_for

TRIALS = 6
TOTAL = 3_000
STREAMS = 20


def test_kill_9_at_random_moments_then_rerun(cli: Any, db: Any, tmp_path: Path) -> None:
    rng = random.Random(20261128)
    path = write_numbered_events(tmp_path / "events.ndjson", TOTAL, STREAMS)
    killed_midway = 0
    for trial in range(TRIALS):
        db.events.drop()
        proc = cli.popen("publish", "--file", str(path), "--batch-size", "100")
        target = rng.randrange(1, TOTAL)  # kill once about this many events are stored
        wait_for(
            lambda p=proc, n=target: p.poll() is not None or db.events.count_documents({}) >= n,
            60,
            f"trial {trial}: {target} events stored",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
        stored = db.events.count_documents({})
        killed_midway += stored < TOTAL
        check_invariants(db, trial)
        rerun = cli.run("publish", "--file", str(path), "-o", "json", timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        summary = json.loads(rerun.stdout)
        assert (summary["published"], summary["duplicates"]) == (TOTAL - stored, stored), trial
        assert db.events.count_documents({}) == TOTAL
        check_invariants(db, trial)
    assert killed_midway >= TRIALS // 2  # the kills really landed in the middle of the work


def check_invariants(db: Any, trial: int) -> None:
    """Every stored event is whole, and each stream's versions run 1..n in input order."""
    for s in range(STREAMS):
        docs = list(db.events.find({"stream": f"s{s}"}).sort("version", 1))
        assert [d["version"] for d in docs] == list(range(1, len(docs) + 1)), trial
        assert [d["data"]["n"] for d in docs] == sorted(d["data"]["n"] for d in docs), trial
        for d in docs:
            assert {"_id", "stream", "version", "type", "data", "ts"} <= d.keys(), trial
