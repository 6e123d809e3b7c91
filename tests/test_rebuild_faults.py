"""rebuild-sessions under kill -9, concurrent readers, publishers and runs, and random histories."""

from __future__ import annotations

import os
import random
import signal
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pymongo
import pytest
from test_rebuild import FIELDS, Log, assert_exact, expected_session, rebuild
from waiting import wait_for

TYPES = ["session.started", "login", "logout", "profile.updated", "session.ended", "page.viewed"]


def random_event(log: Log, rng: random.Random, stream: str, ts: datetime | None = None) -> dict:
    kind = rng.choice(TYPES)
    data = {
        "session.started": {"name": rng.choice(["Ada", "Bo"]), "email": f"{stream}@x"},
        "login": {"username": f"{stream}-{rng.randint(1, 9)}"},
        "profile.updated": rng.choice([{"name": "Cy"}, {"email": "cy@x"}, {}]),
    }.get(kind, {"path": "/"})
    return log.event(stream, kind, data, ts=ts)


class Reader(threading.Thread):
    """Reads the whole projection over and over, noting its smallest size and any partial doc."""

    def __init__(self, uri: str, db_name: str) -> None:
        super().__init__(daemon=True)
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, tz_aware=True)
        self.sessions = self.client[db_name].sessions
        self.stop = threading.Event()
        self.reads = 0
        self.smallest: int | None = None
        self.partial: list[dict[str, Any]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            docs = list(self.sessions.find())
            self.reads += 1
            self.smallest = len(docs) if self.smallest is None else min(self.smallest, len(docs))
            self.partial += [d for d in docs if set(d) != FIELDS][:5]

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        self.client.close()


def count(db: Any, query: dict[str, Any]) -> int:
    return int(db.command("count", "sessions", query=query)["n"])


def assert_prefix_folds(db: Any) -> None:
    """Each stored session is the fold of its stream's events up to its version: whole, not torn."""
    events: dict[str, list[dict[str, Any]]] = {}
    for e in db.events.find().sort([("stream", 1), ("version", 1)]):
        events.setdefault(e["stream"], []).append(e)
    for doc in db.sessions.find():
        prefix = [e for e in events.get(doc["_id"], []) if e["version"] <= doc["version"]]
        assert doc == expected_session(doc["_id"], prefix), doc["_id"]


@pytest.mark.parametrize("rerun", [[], ["--incremental"]], ids=["full", "incremental"])
def test_kill_9_midway_leaves_a_usable_projection_that_a_rerun_makes_exact(cli, db, rerun):
    streams = 1500
    assert cli("seed", "--users", str(streams), "--events-per-user", "3").exit_code == 0
    rebuild(cli)
    log = Log(db)
    rng = random.Random(4)
    log.add(*(random_event(log, rng, f"user-{i:05d}") for i in range(1, streams + 1)))
    reader = Reader(cli.uri, cli.db)
    reader.start()
    try:
        proc = cli.popen("rebuild-sessions", "--batch-size", "5")
        try:
            wait_for(
                lambda: proc.poll() is not None or count(db, {"version": 4}) >= 40,
                60,
                "the rebuild to write some sessions",
            )
            assert proc.poll() is None, f"the rebuild ended before the kill: {proc.stderr.read()}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        renewed = count(db, {"version": 4})
        assert 0 < renewed < streams, renewed
        assert db.sessions.count_documents({}) == streams
        assert_prefix_folds(db)
        report = rebuild(cli, *rerun)
        assert report["written"] == streams - renewed
        assert_exact(db)
    finally:
        reader.finish()
    assert reader.reads > 1 and reader.smallest == streams
    assert reader.partial == []


def test_readers_never_see_an_empty_or_torn_projection(cli, db):
    log = Log(db)
    rng = random.Random(9)
    log.add(*(random_event(log, rng, f"s{i:04d}") for i in range(800) for _ in range(2)))
    rebuild(cli)
    db.events.delete_many({"stream": {"$lt": "s0400"}})  # half the streams go away
    log.add(*(random_event(log, rng, f"s{i:04d}") for i in range(400, 1200)))
    reader = Reader(cli.uri, cli.db)
    reader.start()
    try:
        wait_for(lambda: reader.reads > 0, 30, "a first read")
        result = cli.run("rebuild-sessions", "--batch-size", "20", "-o", "json")
        assert result.returncode == 0, result.stderr
        wait_for(lambda: reader.reads > 3, 30, "reads after the rebuild")
    finally:
        reader.finish()
    assert_exact(db)
    assert db.sessions.count_documents({}) == 800
    # The 400 streams that kept their events never lost their sessions; no read was empty.
    assert reader.smallest is not None and reader.smallest >= 400
    assert reader.partial == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_equals_full_after_random_histories(cli, db, seed):
    rng = random.Random(seed)
    log = Log(db)
    streams = [f"s{i}" for i in range(10)]
    runs = 0
    for _ in range(40):
        roll = rng.random()
        if roll < 0.6:
            lag = rng.choice([0, 0, 0, 0, 0, 0.4, 2, 45, 3600])  # late, or clocks behind
            ts = datetime.now(timezone.utc) - timedelta(seconds=lag)
            log.add(
                *(random_event(log, rng, rng.choice(streams), ts) for _ in range(rng.randint(1, 8)))
            )
        else:
            runs += 1
            if roll < 0.9:
                rebuild(cli, "--incremental", "--margin", rng.choice(["0", "1", "30"]))
            else:
                rebuild(cli)
            assert_exact(db)
    rebuild(cli, "--incremental")
    assert_exact(db)
    assert runs > 3


def test_concurrent_publishers_and_runs_end_exact(cli, db):
    cli("seed", "--users", "200", "--events-per-user", "3")
    rebuild(cli)
    stop = threading.Event()
    published = [0]

    def publish() -> None:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(cli.uri, tz_aware=True)
        log = Log(client[cli.db])
        rng = random.Random(11)
        try:
            while not stop.is_set():
                names = [f"user-{rng.randint(1, 260):05d}" for _ in range(5)]
                log.add(*(random_event(log, rng, name) for name in names))
                published[0] += 5
        finally:
            client.close()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        full = cli.popen("rebuild-sessions", "--batch-size", "10")
        for _ in range(3):
            rebuild(cli, "--incremental")
        assert full.wait(60) == 0, full.stderr.read()
        full.communicate()
        wait_for(lambda: published[0] > 100, 30, "some events published")
    finally:
        stop.set()
        publisher.join(30)
    rebuild(cli, "--incremental")
    assert_exact(db)
