"""Followers and documents that are not events (issue 24, finding 9): a document without a ts
is no late event, and a follower does not warn again, at each start, about an old document."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from test_rebuild import Log
from waiting import wait_for

UTC = timezone.utc


def lines_of(proc: Any) -> tuple[list[str], threading.Thread]:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    return lines, reader


def stop(proc: Any) -> str:
    proc.terminate()
    proc.wait(30)
    err: str = proc.stderr.read()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()
    return err


def history(db: Any) -> None:
    """Events a minute old and new: what the watch shows settles below the newest (the ledger
    summarises what is older than its window), so an older one arriving now is late."""
    log = Log(db)
    now = datetime.now(UTC)
    log.add(*(log.event("a", "t", ts=now - timedelta(seconds=s)) for s in (60, 30, 0)))


def test_a_document_without_ts_is_no_late_event_to_watch(cli: Any, db: Any) -> None:
    history(db)
    proc = cli.popen("watch", "--from", "start", "--checkpoint", "w", "-o", "json")
    lines, reader = lines_of(proc)
    wait_for(lambda: len(lines) == 3, 30, "the history")
    db.events.insert_one({"_id": "no-ts", "stream": "a", "version": 9, "type": "t"})
    assert cli("publish", "t", "--stream", "b", "--id", "e2").exit_code == 0
    wait_for(lambda: any('"e2"' in line for line in lines), 30, "the next event")
    err = stop(proc)
    reader.join(10)
    assert "has a ts more than" not in err, err


def test_a_document_without_ts_is_no_late_event_to_a_follower(cli: Any, db: Any) -> None:
    assert cli("seed").exit_code == 0
    history(db)
    proc = cli.popen("rebuild-sessions", "--follow", "-o", "json")
    wait_for(lambda: db.evstream_projections.count_documents({}), 60, "the catch-up")
    # The checkpoint is saved before the change stream opens; the dev store records nothing
    # while no stream is open. An event applied after the catch-up was seen once the stream was
    # open (docs/handover.md: the stream opens first), so the document below is a live change.
    assert cli("publish", "login", "--stream", "carol").exit_code == 0
    wait_for(lambda: db.sessions.find_one({"_id": "carol"}), 30, "the follower live")
    db.events.insert_one({"_id": "no-ts", "stream": "alice", "version": 99, "type": "login"})
    assert cli("publish", "logout", "--stream", "bob").exit_code == 0
    wait_for(
        lambda: (db.sessions.find_one({"_id": "bob"}) or {}).get("status") == "signed_out",
        30,
        "the live event applied",
    )
    err = stop(proc)
    assert "has a ts more than" not in err and "it is shown" not in err, err
    assert "skipped 1 document that is not events (1 no ts)" in err  # new, so said once


def test_a_follower_does_not_warn_again_about_an_old_document_at_each_start(
    cli: Any, db: Any
) -> None:
    assert cli("seed").exit_code == 0
    # A foreign document from before the follower starts, within its catch-up's margin: the
    # handover's log read meets it again at every start.
    before = datetime.now(UTC) - timedelta(seconds=5)
    db.events.insert_one({"_id": "old", "type": "x", "ts": before.replace(microsecond=0)})
    for _ in range(2):
        r = cli("rebuild-sessions", "--follow", "--idle-timeout", "1", "-o", "json")
        assert r.exit_code == 0, r.stderr
        assert "skipped" not in r.stderr, r.stderr
