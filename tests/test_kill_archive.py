"""kill -9 of `evstream archive` at seeded random moments, in every phase of a run: the files
plus the log always equal the original log, nothing lost and nothing twice, and running the same
command again finishes the archive, after which full rebuilds of a stream projection and a keyed
one give what they gave before (docs/lifecycle.md).

LIFE_KILL_EVENTS and LIFE_KILL_TRIALS scale it (the issue's figure: 30,000 events, 10 trials;
the suite runs a smaller log so that it stays a few minutes on a shared machine)."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import bson
from lifecycle_log import cut, make_events, write_log
from waiting import wait_for

EVENTS = int(os.environ.get("LIFE_KILL_EVENTS", "1500"))
TRIALS = int(os.environ.get("LIFE_KILL_TRIALS", "10"))
VERSIONS = 30
STREAMS = max(EVENTS // VERSIONS, 1)
PARTS = (8, 16, 24)  # archived in parts: versions below 8, then below 16, then below 24
AWARE = bson.json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True)
RECENT = str(Path(__file__).parent / "projections" / "recent.py")  # keyed on the event type


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [bson.json_util.loads(x, json_options=AWARE) for x in handle if x.strip()]


def test_kill_9_archive_at_random_moments_then_finish(cli: Any, db: Any, tmp_path: Path) -> None:
    rng = random.Random(20261207)
    log = write_log(tmp_path / "log.ndjson", make_events(STREAMS, VERSIONS))
    phases_hit: dict[str, int] = {}
    for trial in range(TRIALS):
        for name in db.list_collection_names():
            db.drop_collection(name)
        assert cli("publish", "--file", str(log)).exit_code == 0
        assert cli("rebuild", "sessions").exit_code == 0
        assert cli("rebuild", "recent_by_type", "-m", RECENT).exit_code == 0
        original = {d["_id"]: d for d in db.events.find()}
        sessions = list(db.sessions.find().sort("_id", 1))
        keyed = list(db.recent_by_type.find().sort("_id", 1))
        files: list[Path] = []
        for part, version in enumerate(PARTS):
            gz = ".gz" if (trial + part) % 2 else ""
            target = tmp_path / f"t{trial}-p{part}.ndjson{gz}"
            files.append(target)
            args = (
                "archive",
                "--before",
                cut(version, STREAMS).isoformat(),
                "--to",
                str(target),
                "-m",
                RECENT,
            )
            phase = rng.choice(("writing", "snapshots", "keyed", "deleting"))
            proc = cli.popen(*args)
            share = rng.random()
            conditions = {
                # the partial file has grown to a random share of its lines' bytes
                "writing": lambda t=target, s=share: _size(t) >= s * STREAMS * 8 * 150,
                # the file is verified: the snapshots are being written
                "snapshots": lambda t=target: _state(db, t) in ("written", "deleting", "done"),
                # the keyed projection's snapshots are stored: the streams' are being written
                "keyed": lambda t=target: _keyed_stored(db, t),
                # the snapshots are stored: the events are being deleted
                "deleting": lambda t=target: _state(db, t) in ("deleting", "done"),
            }
            wait_for(
                lambda p=proc, c=conditions[phase]: p.poll() is not None or c(),
                120,
                f"trial {trial} part {part}: {phase}",
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                f.close()
            run = db.evstream_archives.find_one({"path": str(target)})
            state = run["state"] if run else "not started"
            phases_hit[state] = phases_hit.get(state, 0) + 1
            # Nothing is missing from the log that a complete, verified file does not hold.
            missing = original.keys() - {d["_id"] for d in db.events.find({}, {"_id": 1})}
            archived = {d["_id"] for f in files if f.exists() for d in lines(f)}
            assert missing <= archived, (trial, part, state)

            rerun = cli.run(*args, "-o", "json", timeout=300)
            assert rerun.returncode == 0, (trial, part, rerun.stderr)
            assert db.evstream_archives.find_one({"path": str(target)})["state"] == "done"
            in_files = [d for f in files for d in lines(f)]
            in_log = list(db.events.find())
            ids = [d["_id"] for d in in_files + in_log]
            assert len(ids) == len(set(ids)), (trial, part, "an event twice")
            assert {d["_id"]: d for d in in_files + in_log} == original, (trial, part)
            assert not any(d["version"] < version for d in in_log)
        assert cli("check").exit_code == 0
        assert cli("rebuild", "sessions").exit_code == 0
        after = list(db.sessions.find().sort("_id", 1))
        wrong = [(a, b) for a, b in zip(after, sessions, strict=False) if a != b]
        assert len(after) == len(sessions) and not wrong, (trial, phases_hit, wrong[:1])
        assert cli("rebuild", "recent_by_type", "-m", RECENT).exit_code == 0
        assert list(db.recent_by_type.find().sort("_id", 1)) == keyed, (trial, phases_hit)
    assert len(phases_hit) >= 2, phases_hit  # the kills landed in more than one phase
    print(json.dumps({"events": EVENTS, "trials": TRIALS, "states at the kill": phases_hit}))


def _state(db: Any, path: Path) -> str | None:
    run = db.evstream_archives.find_one({"path": str(path)}, {"state": 1})
    return run["state"] if run else None


def _keyed_stored(db: Any, path: Path) -> bool:
    run = db.evstream_archives.find_one({"path": str(path)}, {"_id": 1})
    return run is not None and db.evstream_archived_keys.find_one({"run": run["_id"]}) is not None


def _size(path: Path) -> int:
    partial = path.with_name(path.name + ".partial")
    for candidate in (partial, path):
        try:
            return candidate.stat().st_size
        except OSError:
            continue
    return 0
