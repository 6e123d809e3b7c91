"""`watch` as a reader of history (--no-follow), and the warnings for names that do not exist
yet and for a --from in the future."""

from __future__ import annotations

import json
import time

from conftest import Cli
from test_watch_cli import Running, logins, publish


def test_no_follow_reads_one_stream_and_exits_0(cli):
    publish(cli, logins("alice", 3) + logins("bob", 2) + logins("alice", 1, start=3))
    started = time.monotonic()
    r = cli.run("watch", "--from", "start", "--stream", "alice", "--no-follow", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 20
    docs = [json.loads(line)["doc"] for line in r.stdout.splitlines()]
    assert [(d["stream"], d["version"]) for d in docs] == [("alice", v) for v in (1, 2, 3, 4)]
    assert "up to now" in r.stderr


def test_no_follow_from_now_shows_nothing_and_a_checkpoint_continues(cli):
    publish(cli, logins("alice", 2))
    r = cli("watch", "--no-follow", "-o", "json")
    assert r.exit_code == 0 and r.stdout == ""
    r = cli("watch", "--from", "start", "-c", "reader", "--no-follow", "-o", "json")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2
    publish(cli, logins("bob", 1))
    r = cli("watch", "-c", "reader", "--no-follow", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x)["doc"]["stream"] for x in r.stdout.splitlines()] == ["bob"]


def test_no_follow_on_another_collection_reads_it_and_exits(cli, db):
    db.sessions.insert_many([{"_id": "alice"}, {"_id": "bob"}])
    r = cli("watch", "sessions", "--from", "start", "--no-follow", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x)["key"] for x in r.stdout.splitlines()] == [
        {"_id": "alice"},
        {"_id": "bob"},
    ]


def test_a_collection_that_does_not_exist_yet_is_warned_about_once_and_waited_for(cli, db):
    publish(cli, logins("alice", 1))  # the database exists; `nosuchcoll` does not
    watching = Running(cli.popen("watch", "nosuchcoll", "-o", "json"))
    try:
        watching.wait_for(lambda: any("does not exist yet" in x for x in watching.err), "warning")
        watching.ready()  # the stream is open: an insert now is live
        db.nosuchcoll.insert_one({"_id": "late", "n": 1})
        watching.wait_for(lambda: len(watching.out) == 1, "the insert")
    finally:
        watching.stop()
    warnings = [x for x in watching.err if "does not exist yet" in x]
    assert len(warnings) == 1 and "nosuchcoll" in warnings[0]
    assert json.loads(watching.out[0])["key"] == {"_id": "late"}


def test_a_database_that_does_not_exist_is_named_and_a_future_from_warns(cli, db_name):
    typo = Cli(cli.uri, db_name + "x")
    r = typo("watch", "--idle-timeout", "0.5", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert f"the database '{db_name}x' does not exist yet" in r.stderr
    r = cli("watch", "--from", "2999-01-01T00:00:00Z", "--idle-timeout", "0.5", "-o", "json")
    assert r.exit_code == 0
    assert "is in the future" in r.stderr
