"""A consumer built on `Client.follow` with a checkpoint, killed with kill -9 while events
arrive and restarted, loses nothing, and sees again at most the one change it held."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from waiting import wait_for

import evstream

# The consumer: each change's event id to a file, one line per change, written before the next
# change is asked for (which is when the change counts as handled).
CONSUMER = """
import os, sys, time
import evstream
uri, db, out, idle = sys.argv[1:5]
fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
with evstream.connect(uri, db) as log:
    for change in log.follow(checkpoint="mailer", start="start", idle_timeout=float(idle)):
        os.write(fd, (change.doc["_id"] + "\\n").encode())
        time.sleep(0.002)  # the handler's work
"""


def consumer(uri: str, db: str, out: Path, idle: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CONSUMER, uri, db, str(out), str(idle)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def handled(out: Path) -> list[str]:
    return out.read_text().split() if out.exists() else []


def test_a_follow_consumer_killed_and_restarted_loses_nothing(
    server_uri: str, db_name: str, db: Any, tmp_path: Path
) -> None:
    out = tmp_path / "handled.txt"
    ids = [f"e{i:04d}" for i in range(400)]
    with evstream.connect(server_uri, db_name) as log:
        log.append_many(
            [{"type": "t", "stream": f"s{i % 7}", "id": e} for i, e in enumerate(ids[:200])]
        )

        def publish_rest() -> None:  # while the consumer runs, across the kill
            for start in range(200, 400, 10):
                log.append_many(
                    [
                        {"type": "t", "stream": f"s{i % 7}", "id": ids[i]}
                        for i in range(start, start + 10)
                    ]
                )

        first = consumer(server_uri, db_name, out, idle=60)
        try:
            wait_for(lambda: len(handled(out)) >= 100, 60, "the consumer to handle 100 changes")
            publisher = threading.Thread(target=publish_rest)
            publisher.start()
            wait_for(lambda: len(handled(out)) >= 150, 60, "150 changes handled")
            os.kill(first.pid, signal.SIGKILL)
            first.wait(30)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == -signal.SIGKILL
        before_restart = len(handled(out))
        second = consumer(server_uri, db_name, out, idle=3)
        publisher.join(60)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
    lines = handled(out)
    assert set(lines) == set(ids), f"lost: {sorted(set(ids) - set(lines))[:10]}"
    again = [e for e, n in collections.Counter(lines).items() if n > 1]
    assert len(again) <= 1, again  # at most the change held at the kill
    assert len(lines) > before_restart
    assert db.evstream_checkpoints.find_one({"_id": "mailer"}) is not None


# Ctrl-C: while a change is being handled (it is not saved, and comes again), and while the
# follow waits for changes (everything handled is saved); either way the process ends at once.
INTERRUPTED = """
import sys, time
import evstream
uri, db, slow = sys.argv[1:4]
with evstream.connect(uri, db) as log:
    with log.follow(checkpoint="mailer", start="start") as changes:
        for change in changes:
            print("handling", change.doc["_id"], flush=True)
            if change.doc["_id"] == slow:
                time.sleep(120)  # the handler's long work, which Ctrl-C interrupts
            print("handled", change.doc["_id"], flush=True)
"""


def interrupted_consumer(uri: str, db: str, slow: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, uri, db, slow],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines_until(proc: subprocess.Popen[str], wanted: str) -> list[str]:
    assert proc.stdout is not None
    seen = []
    while True:
        line = proc.stdout.readline()
        assert line, (
            f"the consumer ended before {wanted!r}: {proc.stderr.read() if proc.stderr else ''}"
        )
        seen.append(line.strip())
        if line.strip() == wanted:
            return seen


def test_ctrl_c_while_handling_or_waiting(server_uri: str, db_name: str, db: Any) -> None:
    with evstream.connect(server_uri, db_name) as log:
        log.append_many([{"type": "t", "stream": "s", "id": f"e{i}"} for i in range(5)])
    first = interrupted_consumer(server_uri, db_name, slow="e2")
    try:
        lines_until(first, "handling e2")
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=15)  # at once: no outage to wait out
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0 and "KeyboardInterrupt" in err
    second = interrupted_consumer(server_uri, db_name, slow="none")
    try:
        seen = lines_until(second, "handled e4")
        assert seen[0] == "handling e2", seen  # the change held at Ctrl-C comes again, first
        # e4 is saved once the consumer asks for the next change: then it waits for one.
        wait_for(
            lambda: db.evstream_checkpoint_window.find_one({"c": "mailer", "id": "e4"}),
            30,
            "e4 saved as handled",
        )
        second.send_signal(signal.SIGINT)
        second.communicate(timeout=15)
    finally:
        if second.poll() is None:
            second.kill()
    third = interrupted_consumer(server_uri, db_name, slow="none")
    try:
        with evstream.connect(server_uri, db_name) as log:
            log.append("t", "s", id="e5")
        assert lines_until(third, "handled e5") == ["handling e5", "handled e5"]
    finally:
        third.send_signal(signal.SIGINT)
        third.communicate(timeout=15)
