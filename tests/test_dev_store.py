"""The embedded dev store in daily use: it keeps its address across stops and restarts, running
watchers find it again, a routine stop leaves a clean log, notices are said once, and the store
is its owner's alone (docs/dev-store.md)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_embedded import evstream, home, record  # noqa: F401 - the fixture is used by name
from waiting import wait_for

from evstream.embedded import default_port, port_free, socket_uri


def start(*args: str, **env: str) -> dict[str, Any]:
    r = evstream("server", "start", *args, "-o", "json", **env)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


class Watch:
    """A running `evstream watch -o json` whose stdout and stderr are read by threads, so every
    wait on its output has a deadline (a bare readline on a silent watch would hang the test)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # the watch ended

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line)

    def stderr(self) -> str:
        return "".join(self.errors)

    def poll(self) -> int | None:
        return self.proc.poll()


@pytest.fixture
def watcher(home: Path) -> Iterator[Any]:  # noqa: F811
    """Start `evstream watch -o json` (extra env as keywords) and stop it afterwards."""
    watches: list[Watch] = []

    def run(*args: str, **env: str) -> Watch:
        proc = subprocess.Popen(
            [sys.executable, "-m", "evstream", "watch", "-o", "json", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        watch = Watch(proc)
        watches.append(watch)
        # The watch says on stderr when it is live; from then on it sees every change.
        wait_for(lambda: "watching" in watch.stderr(), 30, "the watch to go live")
        return watch

    yield run
    for watch in watches:
        if watch.poll() is None:
            os.kill(watch.proc.pid, signal.SIGCONT)  # a stopped watch cannot die otherwise
            watch.proc.kill()
        watch.proc.wait(30)


def next_change(watch: Watch, timeout: float = 30) -> dict[str, Any]:
    """The watch's next JSON line, within `timeout` seconds (a few: its backoff after a stop)."""
    try:
        line = watch.lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(
            f"no change from the watch within {timeout:.0f} s; its stderr:\n{watch.stderr()}"
        ) from None
    assert line, f"the watch ended (exit {watch.proc.wait(10)}): {watch.stderr()}"
    return dict(json.loads(line))


def publish(event_type: str, **env: str) -> None:
    r = evstream("publish", event_type, "-s", "daily", "-o", "json", **env)
    assert r.returncode == 0, r.stderr


# --- the address -------------------------------------------------------------------------------


def test_the_store_listens_on_a_socket_in_its_home_by_default(home: Path) -> None:  # noqa: F811
    info = start()
    assert info["socket"] == str(home / "server.sock")
    assert info["uri"] == socket_uri(str(home / "server.sock"), "evstream")  # names the db
    assert info["port"] is None and info["tcp_uri"] is None  # no TCP unless asked for
    assert stat.S_ISSOCK((home / "server.sock").stat().st_mode)


def test_the_tcp_port_is_the_homes_default_and_kept_across_restarts(home: Path) -> None:  # noqa: F811
    first = start("--tcp")
    assert first["port"] == default_port(home)
    assert first["tcp_uri"] == f"mongodb://127.0.0.1:{first['port']}/evstream?directConnection=true"
    assert evstream("server", "stop").returncode == 0
    stopped = evstream("server", "status", "-o", "pretty")
    assert stopped.returncode == 3
    assert f"{home / 'server.sock'} · TCP port {first['port']} (on) · kept" in stopped.stdout
    again = start()  # TCP stays on: it was asked for once
    assert again["port"] == first["port"] and again["pid"] != first["pid"]
    r = evstream("server", "restart", "-o", "json")
    assert r.returncode == 0, r.stderr
    restarted = json.loads(r.stdout)
    assert (restarted["port"], restarted["socket"]) == (first["port"], first["socket"])
    assert restarted["pid"] != again["pid"]
    assert f"stopped the embedded dev store (pid {again['pid']})" in r.stderr
    # The next command's auto-start after a stop comes back on the same port as well.
    assert evstream("server", "stop").returncode == 0
    assert evstream("seed", "-o", "json").returncode == 0
    assert record(home)["port"] == first["port"]


def test_a_taken_default_port_falls_back_once_and_is_kept(home: Path) -> None:  # noqa: F811
    wanted = default_port(home)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", wanted))
        squatter.listen()
        r = evstream("server", "start", "--tcp", "-o", "json")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["port"] != wanted
        assert f"port {wanted} is taken" in r.stderr and str(info["port"]) in r.stderr
    assert evstream("server", "stop").returncode == 0
    assert port_free(wanted)
    again = evstream("server", "start", "-o", "json")
    assert json.loads(again.stdout)["port"] == info["port"]  # the recorded one, not the default
    assert "taken" not in again.stderr  # said once


def test_start_tcp_adds_tcp_to_a_running_store_and_no_tcp_says_what_to_run(home: Path) -> None:  # noqa: F811
    first = start()
    assert start("--no-tcp")["started"] is False
    r = evstream("server", "start", "--tcp", "-o", "json", "--db", "shop")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["socket"] == first["socket"] and info["pid"] != first["pid"]
    assert info["tcp_uri"] == f"mongodb://127.0.0.1:{info['port']}/shop?directConnection=true"
    assert "restarted it at the same socket with TCP added" in r.stderr
    assert f"warning: the embedded dev store listens on 127.0.0.1:{info['port']}" in r.stderr
    assert "any local user can connect" in r.stderr
    r = evstream("server", "start", "--no-tcp")
    assert r.returncode == 2
    assert "already runs with TCP" in r.stderr and "evstream server restart --no-tcp" in r.stderr


# --- running watchers ----------------------------------------------------------------------------


def test_a_watch_survives_server_stop_and_the_next_commands_auto_start(
    home: Path,  # noqa: F811
    watcher: Any,
) -> None:
    start()
    proc = watcher()
    publish("before")
    assert next_change(proc)["doc"]["type"] == "before"
    stopped = evstream("server", "stop")
    assert stopped.returncode == 0, stopped.stderr
    publish("after")  # starts the store again
    change = next_change(proc)  # within the watch's backoff, at most a few seconds
    assert (change["doc"]["type"], change["doc"]["version"]) == ("after", 2)
    assert proc.poll() is None
    log = (home / "server.log").read_text()
    assert "Traceback" not in log and "Exception" not in log, log[:2000]


def test_a_watch_on_the_tcp_uri_survives_a_stop_too(home: Path, watcher: Any) -> None:  # noqa: F811
    info = start("--tcp")
    proc = watcher(EVSTREAM_URI=info["tcp_uri"])
    publish("before")
    assert next_change(proc)["doc"]["type"] == "before"
    assert evstream("server", "stop").returncode == 0
    publish("after")  # no URI: the auto-start brings TCP back on the kept port
    assert next_change(proc)["doc"]["type"] == "after"


@pytest.mark.parametrize("via", ["socket", "tcp"])
@pytest.mark.parametrize("checkpoint", [[], ["--checkpoint", "daily"]], ids=["plain", "checkpoint"])
def test_an_event_published_before_the_watch_reconnects_is_shown_once(
    home: Path,  # noqa: F811
    watcher: Any,
    via: str,
    checkpoint: list[str],
) -> None:
    """The store stops and starts again, and an event is published, all before the watch's
    connection comes back (the watch is held with SIGSTOP meanwhile). nx-27017 records no
    change history while no change stream is open, so pymongo's own resume of the old stream
    would never show that event (docs/storage.md, "Lost connections"): the watch reads the
    log again instead, and shows it once."""
    info = start("--tcp")
    env = {"EVSTREAM_URI": info["tcp_uri"]} if via == "tcp" else {}
    watch = watcher(*checkpoint, **env)
    publish("before")
    assert next_change(watch)["doc"]["type"] == "before"
    os.kill(watch.proc.pid, signal.SIGSTOP)
    try:
        assert evstream("server", "stop").returncode == 0
        publish("after")  # starts the store again; no change stream is open on it yet
    finally:
        os.kill(watch.proc.pid, signal.SIGCONT)
    change = next_change(watch)
    assert (change["doc"]["type"], change["doc"]["version"]) == ("after", 2), change
    publish("last")
    # The next line is the next event: nothing was shown twice in between.
    assert next_change(watch)["doc"]["type"] == "last"
    wait_for(lambda: "reconnected" in watch.stderr(), 10, "the notice of the reconnection")
    said = watch.stderr()
    assert "lost the connection to the server" in said, said
    assert "Traceback" not in said and "may be missing" not in said, said
    assert watch.poll() is None


def test_a_routine_stop_with_a_watcher_connected_leaves_the_log_empty(
    home: Path,  # noqa: F811
    watcher: Any,
) -> None:
    start("--tcp")
    watchers = [watcher(), watcher("--from", "start")]
    publish("one")
    for proc in watchers:
        assert next_change(proc)["doc"]["type"] == "one"
    assert evstream("server", "stop").returncode == 0
    assert (home / "server.log").read_text() == ""
    assert not (home / "server.sock").exists()


# --- notices -------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_silences_notices_before_or_after_the_command(home: Path, where: str) -> None:  # noqa: F811
    args = ["-q", "seed", "-o", "json"] if where == "before" else ["seed", "-o", "json", "-q"]
    r = evstream(*args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # not even "started the embedded dev store"
    assert json.loads(r.stdout)["published"] == 4
    bad = evstream("publish", "x", "--quiet")  # errors are still said
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_the_store_is_named_when_started_and_with_verbose(home: Path) -> None:  # noqa: F811
    first = evstream("seed", "-o", "json")
    assert "started the embedded dev store at " + str(home / "server.sock") in first.stderr
    assert evstream("status", "-o", "json").stderr == ""
    for args in (["--verbose", "status"], ["status", "--verbose"]):
        r = evstream(*args, "-o", "json")
        assert r.returncode == 0
        assert r.stderr.startswith("using the embedded dev store at ")
    assert evstream("--verbose", "--quiet", "status").returncode == 2


# --- privacy -------------------------------------------------------------------------------------


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_the_home_and_everything_in_it_are_the_owners_alone_whatever_the_umask(
    home: Path,  # noqa: F811
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "evstream", "seed", "-o", "json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        preexec_fn=lambda: os.umask(0),  # the loosest umask there is
    )
    assert proc.returncode == 0, proc.stderr
    assert evstream("server", "restart", "--tcp").returncode == 0
    found = modes(home)
    assert {"data", "data/evstream.db", "server.json", "address.json", "server.log"} <= set(found)
    assert "server.sock" in found
    loose = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert loose == {}


def test_a_home_made_world_readable_before_is_tightened_at_the_next_start(home: Path) -> None:  # noqa: F811
    (home / "data").mkdir(parents=True)
    (home / "data" / "old.db").write_text("")
    for path in (home, home / "data", home / "data" / "old.db"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    start()
    assert {name: oct(m) for name, m in modes(home).items() if m & 0o077} == {}
