"""The dev store's TCP: added to a running store by `server start --tcp` (running watchers carry
on), a warning whenever it opens (any local user gets full access: the store has no
authentication), the owner's last choice kept by the next auto-start, and URIs that name the
database (mongosh and mongoose would write to `test` otherwise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymongo
from test_dev_store import next_change, publish, start, watcher  # noqa: F401 - fixture by name
from test_embedded import evstream, home, record  # noqa: F401 - the fixture is used by name

from evstream import devserver
from evstream.embedded import DevStore, port_answers, socket_answers

WARNING = "any local user can connect and read or change its data"


def test_start_tcp_adds_tcp_to_a_store_running_without_it(home: Path, watcher: Any) -> None:  # noqa: F811
    first = start()
    assert first["port"] is None
    watch = watcher()
    publish("before")
    assert next_change(watch)["doc"]["type"] == "before"
    info, notes, warnings = devserver.start(home, tcp=True, db="evstream")
    assert info["started"] is True and info["pid"] != first["pid"]
    assert info["socket"] == first["socket"]  # the same socket: watchers find it again
    assert port_answers(info["port"]) and socket_answers(info["socket"])
    assert info["tcp_uri"] == f"mongodb://127.0.0.1:{info['port']}/evstream?directConnection=true"
    assert any("restarted it at the same socket with TCP added" in n for n in notes), notes
    assert len(warnings) == 1 and f"127.0.0.1:{info['port']} (as asked with --tcp)" in warnings[0]
    assert WARNING in warnings[0]
    publish("after")
    assert next_change(watch)["doc"]["type"] == "after"  # the running watcher carried on
    assert DevStore(home).address().tcp is True  # and TCP is kept for the next start
    # Asked again: it runs with TCP already, nothing restarts and nothing is said.
    again, notes, warnings = devserver.start(home, tcp=True)
    assert (again["started"], again["pid"], notes, warnings) == (False, info["pid"], [], [])


def test_start_no_tcp_on_a_store_with_tcp_says_what_to_run(home: Path) -> None:  # noqa: F811
    devserver.start(home, tcp=True)
    try:
        devserver.start(home, tcp=False)
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        assert "already runs with TCP" in str(exc)
        assert getattr(exc, "hint", "") == "evstream server restart --no-tcp"
        assert getattr(exc, "exit_code", None) == 2
    else:
        raise AssertionError("start --no-tcp on a store with TCP did not refuse")


def test_no_warning_without_tcp(home: Path) -> None:  # noqa: F811
    info, notes, warnings = devserver.start(home, tcp=None)
    assert info["port"] is None and warnings == []


def test_auto_start_after_a_stop_keeps_tcp_and_warns(home: Path) -> None:  # noqa: F811
    """Issue 24 finding 10: the next command's auto-start brought TCP back without a word."""
    opened = start("--tcp")
    assert evstream("server", "stop").returncode == 0
    r = evstream("publish", "login", "-s", "alice", "-o", "json", "--quiet")  # still warned
    assert r.returncode == 0, r.stderr
    assert "started the embedded dev store" not in r.stderr  # the notice is quiet
    assert record(home)["port"] == opened["port"]  # the owner's last choice, kept
    assert f"listens on 127.0.0.1:{opened['port']} (kept from when you last started it" in r.stderr
    assert WARNING in r.stderr
    # The next commands use the running store: the warning is said when TCP opens, not again.
    r = evstream("publish", "login", "-s", "alice", "-o", "json")
    assert r.returncode == 0 and WARNING not in r.stderr


def test_auto_start_after_no_tcp_keeps_it_closed(home: Path) -> None:  # noqa: F811
    start("--tcp")
    r = evstream("server", "restart", "--no-tcp", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert evstream("server", "stop").returncode == 0
    r = evstream("publish", "login", "-s", "alice", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert record(home)["port"] is None
    assert WARNING not in r.stderr


def test_uris_name_the_configured_database(home: Path) -> None:  # noqa: F811
    info, _, _ = devserver.start(home, tcp=True, db="shop")
    assert info["uri"].endswith("/shop?directConnection=true")
    assert info["tcp_uri"] == f"mongodb://127.0.0.1:{info['port']}/shop?directConnection=true"
    status = devserver.details(home, "shop")
    assert (status["uri"], status["tcp_uri"]) == (info["uri"], info["tcp_uri"])
    for via in ("uri", "tcp_uri"):
        with pymongo.MongoClient(info[via], serverSelectionTimeoutMS=10_000) as client:
            assert client.get_default_database().name == "shop"  # as mongoose and mongosh read it
            client.get_default_database().events.insert_one({"_id": via})
    with pymongo.MongoClient(info["tcp_uri"]) as client:
        assert client.shop.events.count_documents({}) == 2
