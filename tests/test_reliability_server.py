"""The server SIGKILLed and restarted under a checkpointed watch (with a publisher writing all the
while) and under rebuild-sessions, several times each at seeded random moments.

These tests kill and restart their own nx-27017 server, so they cannot run against
EVSTREAM_TEST_URI.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from typing import Any

import pymongo
import pytest
from conftest import TEST_URI, Cli
from test_reliability_kill import (
    SessionReader,
    append_logins,
    assert_exact,
    assert_whole_prefixes,
    close,
    rebuild_json,
)
from test_watch_cli import Running
from waiting import wait_for

pytestmark = pytest.mark.skipif(bool(TEST_URI), reason="kills and restarts its own nx-27017")

FAST_FAIL = {"EVSTREAM_TIMEOUT_MS": "1000"}


def mongo(uri: str) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=10_000)


def in_outage(err: list[str]) -> bool:
    """Whether a watcher's stderr says it is cut off: its last "lost the connection" line has
    no "reconnected" line after it (it says each once per outage, however many kills)."""
    for line in reversed(err):
        if "reconnected" in line:
            return False
        if "lost the connection" in line:
            return True
    return False


class Publisher(threading.Thread):
    """Publishes chunks of NDJSON with `evstream publish --file -`, one process per chunk, and
    runs a chunk again when its process lost the server (exit 3): ids make that safe."""

    def __init__(self, cli: Cli, chunks: int, size: int) -> None:
        super().__init__(daemon=True)
        self.cli, self.chunks, self.size = cli, chunks, size
        self.done = 0
        self.retries = 0
        self.problems: list[str] = []

    def chunk(self, k: int) -> str:
        return "".join(
            json.dumps({"type": "login", "stream": f"p{n % 3}", "id": f"c{k:03d}-{n:02d}"}) + "\n"
            for n in range(self.size)
        )

    def run(self) -> None:
        for k in range(self.chunks):
            while True:
                r = self.cli.run("publish", "--file", "-", input=self.chunk(k), **FAST_FAIL)
                if r.returncode == 0:
                    break
                if r.returncode != 3 or "Traceback" in r.stderr or self.retries > 50:
                    self.problems.append(f"chunk {k}: exit {r.returncode}: {r.stderr[-500:]}")
                    return
                self.retries += 1
            self.done = k + 1


def test_server_killed_and_restarted_during_a_checkpointed_watch(
    own_server: Any, db_name: str
) -> None:
    rng = random.Random(70201)
    own = Cli(own_server.uri, db_name)
    client = mongo(own_server.uri)
    watching = Running(own.popen("watch", "-o", "json", "-c", "cp", "--from", "start", **FAST_FAIL))
    publisher = Publisher(own, chunks=8, size=15)
    faults = 0
    try:
        watching.ready()
        publisher.start()
        for at in sorted(rng.sample(range(1, 8), 3)):
            wait_for(
                lambda at=at: publisher.done >= at or not publisher.is_alive(), 120, f"chunk {at}"
            )
            assert publisher.is_alive(), publisher.problems
            own_server.kill()
            faults += 1
            noticed = rng.random() < 0.5  # down long enough for the watcher to notice, or not
            if noticed:
                # Not necessarily a new report: after a quick restart (not noticed) a loaded
                # watcher can still be riding that outage out when this kill comes, and then it
                # is one outage to it. A new "lost the connection" line never comes, and waiting
                # for one before restarting the server would wait forever.
                watching.wait_for(
                    lambda: in_outage(watching.err), "the watcher to notice the server went away"
                )
            own_server.start()
            if noticed:
                watching.wait_for(lambda: not in_outage(watching.err), "the watcher to reconnect")
        publisher.join(180)
        assert not publisher.is_alive() and publisher.problems == [], publisher.problems
        stored = list(client[db_name].events.find())
        assert len(stored) == 120  # re-runs of a chunk stored nothing twice
        ids = {d["_id"] for d in stored}
        watching.wait_for(
            lambda: ids <= {json.loads(x)["doc"]["_id"] for x in watching.out},
            "every stored event shown",
            60,
        )
        watching.wait_for(lambda: not in_outage(watching.err), "the watcher back from every outage")
        watching.proc.send_signal(signal.SIGINT)
        assert watching.finish() == 130
    finally:
        watching.stop()
        client.close()
    print(f"watch: {faults} server kills, publisher re-ran {publisher.retries} chunk(s)")
    assert not any("Traceback" in line for line in watching.err), watching.err
    docs = [json.loads(x)["doc"] for x in watching.out]
    assert sorted(d["_id"] for d in docs) == sorted(ids), "shown ≠ stored (lost or repeated)"
    for stream in ("p0", "p1", "p2"):
        shown = [d["version"] for d in docs if d["stream"] == stream]
        assert shown == list(range(1, len(shown) + 1)), f"{stream} not in version order"


REBUILD_TRIALS = 3
STREAMS = 200


def test_server_killed_and_restarted_during_rebuilds(own_server: Any, db_name: str) -> None:
    rng = random.Random(70202)
    own = Cli(own_server.uri, db_name)
    client = mongo(own_server.uri)
    db = client[db_name]
    assert own("seed", "--users", str(STREAMS), "--events-per-user", "3").exit_code == 0
    rebuild_json(own)
    exits = []
    try:
        with SessionReader(own_server.uri, db_name, STREAMS) as reader:
            for trial in range(REBUILD_TRIALS):
                marker = f"t{trial}"
                changed = append_logins(
                    db, [f"user-{i:05d}" for i in range(1, STREAMS + 1)], marker
                )
                reader.refresh()
                target = rng.randrange(1, changed // 2)
                mode = rng.choice([[], ["--incremental"]])
                proc = own.popen("rebuild-sessions", "--batch-size", "2", *mode, **FAST_FAIL)
                wait_for(
                    lambda p=proc, m=marker, t=target: (
                        p.poll() is not None or db.sessions.count_documents({"username": m}) >= t
                    ),
                    60,
                    f"trial {trial}: some sessions renewed",
                )
                assert proc.poll() is None, "the rebuild ended before the server was killed"
                own_server.kill()
                if rng.random() < 0.5:
                    proc.wait(60)  # the rebuild gives up while the server is down
                own_server.start()
                code = proc.wait(60)
                _, err = close(proc)
                exits.append(code)
                assert code in (0, 3), err
                assert "Traceback" not in err, err
                if code == 3:
                    assert len([x for x in err.splitlines() if x.startswith("error:")]) == 1, err
                assert assert_whole_prefixes(db) == STREAMS, f"trial {trial}"
                report = rebuild_json(own, *rng.choice([[], ["--incremental"]]))
                assert report["written"] >= 1
                assert_exact(db)
        reader.check()
    finally:
        client.close()
    print(f"rebuild: {REBUILD_TRIALS} server kills; rebuild exits {exits}; reads {reader.reads}")
