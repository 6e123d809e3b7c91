"""Ctrl-C (SIGINT) in the commands that run long enough to be interrupted, at seeded random
moments: exit 130, no traceback, and nothing half-written.

publish and seed are interrupted in tests/test_interrupt.py, a plain watch in
tests/test_watch_cli.py and `server logs --follow` in tests/test_embedded.py; here: a checkpointed
watch (nothing repeated on resuming), rebuild-sessions (every session whole), bench (its scratch
databases dropped) and status (interrupted while the server is slow to answer).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
from typing import Any

import pymongo
import pytest
from conftest import TEST_URI, Cli
from test_reliability_kill import (
    SessionReader,
    append_logins,
    assert_exact,
    assert_version_order,
    assert_whole_prefixes,
    feeding,
    rebuild_json,
    signal_when,
)
from test_watch_cli import Running
from waiting import wait_for


def test_ctrl_c_of_a_checkpointed_watch_repeats_nothing(cli: Any, db: Any) -> None:
    """Ctrl-C waits until the printed change is saved: resuming shows no event twice."""
    rng = random.Random(70501)
    runs: list[list[dict[str, Any]]] = []
    with feeding(cli, 40) as feeder:
        for trial in range(4):
            watching = Running(cli.popen("watch", "-o", "json", "-c", "cp", "--from", "start"))
            watching.lines(rng.randint(1, 60))
            watching.proc.send_signal(signal.SIGINT)
            assert watching.finish() == 130, (trial, watching.err)
            assert not any("Traceback" in line for line in watching.err), watching.err
            runs.append([json.loads(line)["doc"] for line in watching.out])
    last = cli.run("watch", "-o", "json", "-c", "cp", "--idle-timeout", "1.5", timeout=90)
    assert last.returncode == 0, last.stderr
    runs.append([json.loads(line)["doc"] for line in last.stdout.splitlines()])
    shown = [d["_id"] for run in runs for d in run]
    stored = {d["_id"] for d in db.events.find({}, {"_id": 1})}
    assert len(stored) == feeder.next
    assert set(shown) == stored, "an event was lost"
    assert len(shown) == len(set(shown)), "an event was shown again after Ctrl-C"
    for i, run in enumerate(runs):
        assert_version_order(run, f"run {i}")


STREAMS = 200


def test_ctrl_c_of_rebuild_sessions_leaves_every_session_whole(cli: Any, db: Any) -> None:
    rng = random.Random(70502)
    assert cli("seed", "--users", str(STREAMS), "--events-per-user", "3").exit_code == 0
    rebuild_json(cli)
    streams = [f"user-{i:05d}" for i in range(1, STREAMS + 1)]
    interrupted = 0
    with SessionReader(cli.uri, cli.db, STREAMS) as reader:
        for trial in range(4):
            marker = f"c{trial}"
            changed = append_logins(db, rng.sample(streams, rng.randint(80, STREAMS)), marker)
            reader.refresh()
            target = rng.randrange(1, changed)
            mode = ["--incremental"] if trial % 2 else []
            running, err = signal_when(
                cli.popen("rebuild-sessions", "--batch-size", "2", *mode),
                signal.SIGINT,
                lambda m=marker, t=target: db.sessions.count_documents({"username": m}) >= t,
            )
            assert "Traceback" not in err, err
            if running:
                interrupted += 1
                assert not [x for x in err.splitlines() if x.startswith("error:")], err
            assert assert_whole_prefixes(db) == STREAMS
        rebuild_json(cli, "--incremental")
        assert_exact(db)
    reader.check()
    assert interrupted >= 3


def bench_databases(client: Any) -> set[str]:
    """The scratch databases of `evstream bench` on the server."""
    names = client.list_database_names()
    return {name for name in names if name.startswith("evstream_bench_")}


def test_ctrl_c_of_bench_drops_its_scratch_databases(cli: Any, client: Any) -> None:
    rng = random.Random(70503)
    before = bench_databases(client)
    try:
        steps = [("publish_raw", "publish: raw insert_many"), ("publish", "publish: evstream")]
        for trial, (phase, step) in enumerate(steps):
            bench = Running(cli.popen("bench", "publish", "--events", "20000", "--streams", "100"))
            running = interrupt_during(bench, step, client, phase, rng.randrange(1, 5000))
            code = bench.finish()
            assert running, f"trial {trial}: bench ended before Ctrl-C ({code}): {bench.err}"
            assert code == 130, bench.err
            assert not any("Traceback" in x or x.startswith("error:") for x in bench.err), bench.err
            assert bench_databases(client) - before == set(), "scratch databases left behind"
    finally:
        for name in bench_databases(client) - before:
            client.drop_database(name)


def interrupt_during(bench: Running, step: str, client: Any, phase: str, target: int) -> bool:
    """Ctrl-C once `target` events are in the scratch database of `phase`, the timed step that
    bench says has begun. Whether bench was still running then."""
    # Nothing but that database is read, and only once it is set up: on nx-27017 a
    # listDatabases beside bench's dropDatabase can make the drop fail.
    bench.wait_for(lambda: any(step in x for x in bench.err), step)
    scratch = re.search(r"(evstream_bench_\w+_)\*", "\n".join(bench.err))
    assert scratch, bench.err
    events = client[scratch.group(1) + phase].events
    wait_for(
        lambda: bench.proc.poll() is not None or events.estimated_document_count() >= target,
        60,
        f"{target} events in {phase}",
    )
    running = bench.proc.poll() is None
    bench.proc.send_signal(signal.SIGINT)
    return running


@pytest.mark.skipif(bool(TEST_URI), reason="stops and continues its own nx-27017 server")
def test_ctrl_c_of_status_while_the_server_is_slow(own_server: Any, db_name: str) -> None:
    """status reads the whole log; interrupted while the server has not answered yet."""
    own = Cli(own_server.uri, db_name)
    assert own("seed", "--users", "200", "--events-per-user", "10").exit_code == 0
    for attempt in range(2):
        status = Running(
            own.popen("status", "-o", "json", "--verbose", EVSTREAM_TIMEOUT_MS="60000")
        )
        status.wait_for(lambda s=status: any("using MongoDB" in x for x in s.err), "connecting")
        os.kill(own_server.proc.pid, signal.SIGSTOP)  # the server stops answering
        try:
            status.proc.send_signal(signal.SIGINT)
            code = status.finish(30)
        finally:
            os.kill(own_server.proc.pid, signal.SIGCONT)
        assert code == 130, (attempt, status.err)
        assert not any("Traceback" in x or x.startswith("error:") for x in status.err), status.err
        assert status.out == [], "half an answer was printed"
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(own_server.uri)
    try:
        assert client[db_name].events.count_documents({}) == 2000  # status wrote nothing
    finally:
        client.close()
    assert own("status", "-o", "json").exit_code == 0  # and the server is fine
