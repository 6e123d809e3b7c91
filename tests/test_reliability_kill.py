"""kill -9 of `watch --checkpoint` and of `rebuild-sessions` (full and --incremental) at seeded
random moments, many trials each, with the contract's invariants checked after every kill.

The other reliability files import the helpers at the top of this one: the sessions fold written
again here from the sessions table (README, "The data model") (apart from evstream.sessions and from test_rebuild's), the
prefix-fold check, and a reader that reads `sessions` over and over during a rebuild.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import pymongo
import pytest
from pymongo.errors import PyMongoError
from test_rebuild import assert_exact, blank_session, step
from test_watch_cli import Running
from waiting import wait_for

# --- the sessions fold, from the README's data model (written out in test_rebuild) ------------------------------


def prefix_folds(db: Any) -> dict[str, list[dict[str, Any]]]:
    """For each stream, the session after each of its events: [v - 1] is the fold of 1..v."""
    folds: dict[str, list[dict[str, Any]]] = {}
    for event in db.events.find().sort([("stream", 1), ("version", 1)]):
        states = folds.setdefault(event["stream"], [])
        states.append(step(states[-1] if states else blank_session(), event))
    return folds


def torn(doc: dict[str, Any], folds: dict[str, list[dict[str, Any]]]) -> str | None:
    """Why `doc` is not the whole fold of a prefix of its stream, or None when it is."""
    states = folds.get(doc["_id"])
    version = doc.get("version")
    if not states or not isinstance(version, int) or not 1 <= version <= len(states):
        return f"session {doc['_id']!r} at version {version!r} matches no prefix of its stream"
    want = {"_id": doc["_id"], **states[version - 1]}
    if doc != want:
        diff = sorted(k for k in set(doc) | set(want) if doc.get(k) != want.get(k))
        return f"session {doc['_id']!r} at version {version} differs from the fold in {diff}"
    return None


def assert_whole_prefixes(db: Any) -> int:
    """Every stored session is the fold of a prefix of its stream; how many are stored."""
    folds = prefix_folds(db)
    docs = list(db.sessions.find())
    problems = [p for p in (torn(d, folds) for d in docs) if p]
    assert not problems, problems[:5]
    return len(docs)


# --- waiting and reading --------------------------------------------------------------------------


class SessionReader(threading.Thread):
    """Reads the whole of `sessions` again and again, as an application would during a rebuild.

    It notes reads with fewer sessions than `expected` (never allowed: the projection is never
    emptied, not even partly) and any document that is not the whole fold of a prefix of its
    stream. A read that fails because the server is down (fault tests) is retried.
    """

    def __init__(self, uri: str, db_name: str, expected: int) -> None:
        super().__init__(daemon=True)
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            uri, tz_aware=True, serverSelectionTimeoutMS=2000
        )
        self.db = self.client[db_name]
        self.expected = expected
        self.folds = prefix_folds(self.db)
        self.halt = threading.Event()
        self.reads = 0
        self.failed_reads = 0
        self.smallest: int | None = None
        self.problems: list[str] = []

    def refresh(self) -> None:
        """Take the log's current prefixes (call after appending, before starting a rebuild)."""
        self.folds = prefix_folds(self.db)

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                docs = list(self.db.sessions.find())
            except PyMongoError:
                self.failed_reads += 1
                self.halt.wait(0.05)
                continue
            folds = self.folds  # taken after the read: never older than what it read
            self.reads += 1
            self.smallest = len(docs) if self.smallest is None else min(self.smallest, len(docs))
            if len(docs) < self.expected and len(self.problems) < 10:
                self.problems.append(f"a read saw {len(docs)} of {self.expected} sessions")
            for doc in docs:
                problem = torn(doc, folds)
                if problem and len(self.problems) < 10:
                    self.problems.append(problem)

    def __enter__(self) -> SessionReader:
        self.start()
        wait_for(lambda: self.reads > 0, 30, "the reader's first read")
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(30)
        self.client.close()

    def check(self) -> None:
        """What the reader saw broke no rule."""
        assert self.reads > 0
        assert self.problems == [], self.problems
        assert self.smallest == self.expected


def close(proc: Any) -> tuple[str, str]:
    """Wait for a finished process and collect what it printed."""
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None
    out, err = proc.communicate(timeout=60)
    return out or "", err or ""


def signal_when(proc: Any, signum: int, condition: Callable[[], bool]) -> tuple[bool, str]:
    """Send `signum` once `condition` holds (or at once if the process already ended); then
    wait for the process. Whether it was still running when signalled, and its stderr."""
    try:
        wait_for(lambda: proc.poll() is not None or condition(), 60, "the moment to signal")
        running = proc.poll() is None
        proc.send_signal(signum)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = close(proc)
    return running, err


def rebuild_json(cli: Any, *args: str) -> dict[str, Any]:
    """Run rebuild-sessions to the end; its JSON summary."""
    result = cli("rebuild-sessions", *args, "-o", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def append_logins(db: Any, streams: Iterable[str], marker: str) -> int:
    """Append one login (username = marker) at the end of each stream, straight to the log."""
    heads = {
        row["_id"]: row["v"]
        for row in db.events.aggregate([{"$group": {"_id": "$stream", "v": {"$max": "$version"}}}])
    }
    now = datetime.now(timezone.utc)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    docs = [
        {
            "_id": f"{marker}-{stream}",
            "stream": stream,
            "version": heads.get(stream, 0) + 1,
            "type": "login",
            "data": {"username": marker},
            "ts": now,
        }
        for stream in streams
    ]
    db.events.insert_many(docs)
    return len(docs)


# --- kill -9 of a checkpointed watch --------------------------------------------------------------

WATCH_TRIALS = 8
WATCH_STREAMS = 4


def event_line(n: int) -> str:
    stream = f"w{n % WATCH_STREAMS}"
    return json.dumps({"type": "login", "stream": stream, "id": f"ev{n:05d}", "data": {"n": n}})


class Feeder(threading.Thread):
    """Keeps one `evstream publish --file -` writing, a line at a time, until stopped."""

    def __init__(self, proc: Any, first: int) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.next = first
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.004):  # pacing the load, not synchronising
            self.proc.stdin.write(event_line(self.next) + "\n")
            self.proc.stdin.flush()
            self.next += 1


@contextlib.contextmanager
def feeding(cli: Any, preload: int) -> Iterator[Feeder]:
    """A log of `preload` events, and a publisher appending more until the block ends; then the
    publisher must finish cleanly (exit 0). `feeder.next` is the number of events published."""
    lines = "".join(event_line(n) + "\n" for n in range(preload))
    first = cli("publish", "--file", "-", input=lines)
    assert first.exit_code == 0, first.stderr
    publisher = cli.popen("publish", "--file", "-", "--batch-size", "1")
    feeder = Feeder(publisher, preload)
    feeder.start()
    try:
        yield feeder
    finally:
        feeder.halt.set()
        feeder.join(10)
        publisher.stdin.close()
        code = publisher.wait(60)
        _, err = close(publisher)
    assert code == 0, err


def assert_version_order(run: list[dict[str, Any]], what: str) -> None:
    """Within one watcher's output, each stream's events come in version order."""
    for stream in {d["stream"] for d in run}:
        versions = [d["version"] for d in run if d["stream"] == stream]
        assert versions == sorted(versions), f"{what}: {stream} out of version order"


def test_kill_9_of_a_checkpointed_watch_at_random_moments(cli: Any, db: Any) -> None:
    rng = random.Random(70101)
    runs: list[list[dict[str, Any]]] = []
    kills = 0
    with feeding(cli, 60) as feeder:
        for trial in range(WATCH_TRIALS):
            watching = Running(cli.popen("watch", "-o", "json", "-c", "mailer", "--from", "start"))
            target = rng.choice([0, 1, 2, rng.randint(3, 30), rng.randint(30, 120)])
            if target:  # else at once: while it starts, connects or reads its checkpoint
                watching.lines(target)
            watching.proc.send_signal(signal.SIGKILL)
            watching.finish()
            kills += 1
            assert not any("Traceback" in line for line in watching.err), (trial, watching.err)
            runs.append([json.loads(line)["doc"] for line in watching.out])
        assert sum(map(len, runs)) > 0
    last = cli.run("watch", "-o", "json", "-c", "mailer", "--idle-timeout", "1.5", timeout=90)
    assert last.returncode == 0, last.stderr
    assert "Traceback" not in last.stderr
    runs.append([json.loads(line)["doc"] for line in last.stdout.splitlines()])

    print(
        f"watch: {kills} kills, {len(runs)} runs, {sum(map(len, runs))} lines shown",
        [len(r) for r in runs],
    )
    stored = {d["_id"]: d for d in db.events.find()}
    assert len(stored) == feeder.next  # the publisher lost nothing either
    shown = [d["_id"] for run in runs for d in run]
    assert set(shown) == set(stored), f"lost: {sorted(set(stored) - set(shown))[:10]}"
    assert len(shown) - len(set(shown)) <= kills
    for i, run in enumerate(runs):
        ids = [d["_id"] for d in run]
        assert len(ids) == len(set(ids)), f"run {i} showed an event twice"
        later = {d["_id"] for other in runs[i + 1 :] for d in other}
        assert len(set(ids) & later) <= 1, f"run {i}: more than the change in flight shown again"
        assert_version_order(run, f"run {i}")
        for d in run:
            fields = ("stream", "version", "type", "data")
            assert [d[k] for k in fields] == [stored[d["_id"]][k] for k in fields], d


# --- kill -9 of rebuild-sessions -----------------------------------------------------------------

REBUILD_TRIALS = 6
REBUILD_STREAMS = 200


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_kill_9_of_rebuild_sessions_at_random_moments(cli: Any, db: Any, mode: str) -> None:
    rng = random.Random(f"rebuild-{mode}")
    seeded = cli("seed", "--users", str(REBUILD_STREAMS), "--events-per-user", "3")
    assert seeded.exit_code == 0, seeded.stderr
    rebuild_json(cli)
    args = ["rebuild-sessions", "--batch-size", "2"] + (["-i"] if mode == "incremental" else [])
    midway = reruns = 0
    with SessionReader(cli.uri, cli.db, REBUILD_STREAMS) as reader:
        for trial in range(REBUILD_TRIALS):
            marker = f"t{trial}"
            streams = [f"user-{i:05d}" for i in range(1, REBUILD_STREAMS + 1)]
            changed = append_logins(db, rng.sample(streams, rng.randint(60, len(streams))), marker)
            reader.refresh()
            target = rng.randrange(0, changed)
            ran, err = signal_when(
                cli.popen(*args),
                signal.SIGKILL,
                lambda: db.sessions.count_documents({"username": marker}) >= target,  # noqa: B023
            )
            assert "Traceback" not in err, err
            renewed = db.sessions.count_documents({"username": marker})
            midway += ran and renewed < changed
            assert assert_whole_prefixes(db) == REBUILD_STREAMS, f"trial {trial}"
            if trial == REBUILD_TRIALS - 1 or rng.random() < 0.5:
                rerun = rng.choice([[], ["--incremental"]])
                report = rebuild_json(cli, *rerun)
                reruns += 1
                assert_exact(db)
                if not rerun or report["mode"] == "full":
                    assert report["written"] >= changed - renewed
    reader.check()
    print(f"rebuild {mode}: {REBUILD_TRIALS} kills ({midway} midway), {reruns} reruns exact")
    assert reruns >= 2
    assert midway >= REBUILD_TRIALS // 2, f"only {midway} kills landed midway"
