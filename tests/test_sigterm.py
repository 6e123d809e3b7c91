"""SIGTERM (what systemd, Docker and Kubernetes send) is handled as Ctrl-C is, with exit 143
(issue 24, finding 8): the command reports what it did; nothing half-written."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import pytest
from test_projection import CARTS, cart_event, carts, expected_carts, shop
from test_rebuild import Log
from waiting import wait_for

from evstream.errors import ExitCode
from evstream.interrupts import CtrlC


def feed_until_stored(proc: Any, db: Any) -> None:
    n = 0
    while db.events.count_documents({}) == 0:
        lines = (json.dumps({"type": "t", "stream": f"s{(n + i) % 5}"}) for i in range(100))
        proc.stdin.write("".join(line + "\n" for line in lines))
        proc.stdin.flush()
        n += 100
        assert n < 200_000, "nothing was ever stored"


@pytest.mark.parametrize(("sig", "code", "word"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM): "),
    (signal.SIGINT, 130, "interrupted: "),
])  # fmt: skip
def test_a_stopped_publish_says_exactly_what_it_stored(
    cli: Any, db: Any, sig: int, code: int, word: str
) -> None:
    proc = cli.popen("publish", "--file", "-", "--batch-size", "100")
    feed_until_stored(proc, db)
    proc.send_signal(sig)
    assert proc.wait(30) == code
    err = proc.stderr.read()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if word in ln]
    stored = db.events.count_documents({})
    assert f"{word}{stored} event(s) stored, 0 already there" in line, err


def test_publish_warns_once_that_a_file_without_ids_is_not_safe_to_run_again(
    cli: Any, db: Any, tmp_path: Any
) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text('{"type": "t", "stream": "a"}\n' * 3)
    r = cli("publish", "--file", str(path))
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("has no id") == 1, r.stderr
    assert "line 1 has no id" in r.stderr and "stored twice" in r.stderr
    path.write_text('{"type": "t", "stream": "a", "id": "e1"}\n')
    assert "has no id" not in cli("publish", "--file", str(path)).stderr


@pytest.mark.parametrize(("sig", "code", "word"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM): "),
    (signal.SIGINT, 130, "interrupted: "),
])  # fmt: skip
def test_a_stopped_follower_says_what_it_applied_and_saves_its_checkpoint(
    cli: Any, db: Any, sig: int, code: int, word: str
) -> None:
    log = Log(db)
    shop(log, streams=2)
    proc = cli.popen("rebuild", "carts", "--module", CARTS, "--follow", "-o", "json")
    try:
        wait_for(lambda: len(carts(db)) == 2, 60, "the catch-up")
        wait_for(lambda: db.evstream_projections.find_one({"_id": "carts"}), 30, "a checkpoint")
        log.add(cart_event(log, "cart-001", "cart.item_added", 40))
        wait_for(lambda: "sku-40" in carts(db)["cart-001"]["items"], 30, "the live event")
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if word in ln]
    assert "following carts: caught up (full, " in line
    assert "then 1 live event applied" in line and "checkpoint saved" in line, line
    assert carts(db) == expected_carts(db)
    # The checkpoint covers the live event: status says the projection is up to date.
    status = cli("status", "-o", "json")
    rows = {row["checkpoint"]: row for row in json.loads(status.stdout)["projections"]["items"]}
    assert rows["carts"]["lag"] == 0, rows


def test_the_handler_tells_sigterm_from_ctrl_c() -> None:
    ctrl_c = CtrlC()
    with ctrl_c, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)
    assert ctrl_c.exit_code == ExitCode.TERMINATED == 143
    error = ctrl_c.stopped("3 event(s) stored")
    assert error.exit_code == 143 and error.line() == "terminated (SIGTERM): 3 event(s) stored"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back on the way out
    with ctrl_c, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    assert ctrl_c.exit_code == 130 and ctrl_c.stopped("x").line() == "interrupted: x"


def test_a_stopped_rebuild_says_what_it_applied_and_that_the_next_run_finishes(
    server_uri: str, db_name: str, db: Any
) -> None:
    from evstream.errors import Interrupted
    from evstream.projection import plan_rebuild, rebuild
    from evstream.projections import builtin_projection
    from evstream.settings import Settings
    from evstream.storage import connect

    log = Log(db)
    log.add(*(log.event(f"user{i}", "login", {"username": f"u{i}"}) for i in range(5)))
    store = connect(Settings(uri=server_uri, db=db_name), lambda message: None)

    def stop(n: int) -> None:
        raise KeyboardInterrupt  # as the handler raises it for Ctrl-C or SIGTERM

    try:
        plan = plan_rebuild(store, builtin_projection("sessions"), incremental=False)
        with pytest.raises(Interrupted) as stopped:
            rebuild(store, plan, progress=stop)
    finally:
        store.close()
    assert stopped.value.line() == (
        "interrupted: rebuilding sessions (full): 5 events applied, 0 document(s) written; no "
        "checkpoint saved, so the next run (full or --incremental) finishes the job"
    )
    assert db.evstream_projections.find_one({"_id": "sessions"}) is None


def test_a_terminated_watch_exits_143_with_its_checkpoint_saved(cli: Any, db: Any) -> None:
    for i in range(3):
        assert cli("publish", "t", "--stream", "s", "--id", f"e{i}").exit_code == 0
    proc = cli.popen("watch", "--from", "start", "--checkpoint", "term", "-o", "json")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(lines) == 3, 30, "the three events shown")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        reader.join(10)
        err = proc.stderr.read()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
    assert code == 143, err
    assert "Traceback" not in err and len(lines) == 3
    again = cli("watch", "--checkpoint", "term", "--no-follow", "-o", "json")
    assert again.exit_code == 0 and again.stdout == "", again.stdout  # nothing shown twice
