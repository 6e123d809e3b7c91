"""Ctrl-C (SIGINT) in publish and seed: exit 130, no traceback, an exact account, nothing partial."""

from __future__ import annotations

import json
import signal
from typing import Any

from waiting import wait_for


def test_ctrl_c_during_a_bulk_publish(cli: Any, db: Any) -> None:
    proc = cli.popen("publish", "--file", "-", "--batch-size", "100")
    # Feed lines until some are stored, then interrupt while the pipe is still open.
    n = 0
    while db.events.count_documents({}) == 0:
        proc.stdin.write(
            "".join(
                json.dumps({"type": "t", "stream": f"s{(n + i) % 5}"}) + "\n" for i in range(100)
            )
        )
        proc.stdin.flush()
        n += 100
        assert n < 200_000, "nothing was ever stored"
    proc.send_signal(signal.SIGINT)
    code = proc.wait(30)
    err = proc.stderr.read()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()
    assert code == 130, err
    assert "Traceback" not in err
    stored = db.events.count_documents({})
    assert f"interrupted: {stored} event(s) stored" in err
    for s in range(5):  # whole batches only: versions without gaps
        versions = [d["version"] for d in db.events.find({"stream": f"s{s}"}).sort("version", 1)]
        assert versions == list(range(1, len(versions) + 1))


def test_ctrl_c_during_seed(cli: Any, db: Any) -> None:
    proc = cli.popen("seed", "--users", "500", "--events-per-user", "200")
    wait_for(lambda: db.events.count_documents({}) > 0, 30, "the first seeded batch")
    proc.send_signal(signal.SIGINT)
    code = proc.wait(30)
    err = proc.stderr.read()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()
    assert code == 130 and "Traceback" not in err, err
    assert f"interrupted: {db.events.count_documents({})} event(s) stored" in err
