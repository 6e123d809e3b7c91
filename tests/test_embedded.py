"""The embedded dev store as a user meets it: no URI, EVSTREAM_HOME pointing at a fresh directory,
evstream run as real processes. Every server a test starts is stopped by the fixture."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evstream.embedded import DevStore, free_port, pid_alive, terminate


def server_pids(home: Path) -> list[int]:
    """Pids of embedded servers whose data lives under `home` (from /proc)."""
    pids = []
    needle = str(home / "data").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"evstream.embedded" in cmdline and needle in cmdline and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh EVSTREAM_HOME and no URI; every server started under it is stopped afterwards."""
    home = tmp_path / "evstream-home"
    monkeypatch.setenv("EVSTREAM_HOME", str(home))
    for name in ("EVSTREAM_URI", "MONGODB_URI", "EVSTREAM_DB", "EVSTREAM_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    yield home
    if home.exists():
        DevStore(home).stop()
    for pid in server_pids(home):
        terminate(pid)


def evstream(
    *args: str, input: str | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run evstream as a user would, in the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "evstream", *args],
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
    )


def record(home: Path) -> dict[str, Any]:
    return json.loads((home / "server.json").read_text())


def test_two_invocations_share_one_server(home: Path):
    first = evstream("seed", "-o", "json")
    assert first.returncode == 0, first.stderr
    assert "started the embedded dev store" in first.stderr
    saved = record(home)
    assert pid_alive(saved["pid"])

    second = evstream("status", "-o", "json")
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""  # the store is said when it is started, not on every command
    assert record(home) == saved  # same server, same port
    status = json.loads(second.stdout)
    assert status["server"]["kind"] == "embedded"
    assert status["server"]["port"] == saved["port"]
    assert status["counts"]["events"] == 4  # what the first invocation stored
    assert server_pids(home) == [saved["pid"]]


def test_a_stale_record_is_recovered_from(home: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    home.mkdir(parents=True)
    stale = {
        "pid": dead.pid,
        "port": free_port(),
        "data_dir": str(home / "data"),
        "log_file": str(home / "server.log"),
        "started_at": time.time() - 3600,
    }
    (home / "server.json").write_text(json.dumps(stale))

    status = evstream("server", "status", "-o", "pretty")
    assert status.returncode == 3
    assert "not running" in status.stdout
    assert f"stale record of pid {dead.pid}" in status.stdout

    started = evstream("server", "start", "-o", "json")
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    assert info["started"] is True
    assert info["pid"] != dead.pid and pid_alive(info["pid"])
    assert f"replaced a stale record of pid {dead.pid}" in started.stderr
    assert record(home)["pid"] == info["pid"]

    seeded = evstream("seed", "-o", "json")
    assert seeded.returncode == 0, seeded.stderr
    assert record(home)["pid"] == info["pid"]


def test_processes_starting_at_the_same_moment_share_one_server(home: Path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "evstream", "server", "start", "-o", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    infos = [json.loads(out) for out, _ in results]
    assert len({(i["pid"], i["port"]) for i in infos}) == 1
    assert sorted(i["started"] for i in infos) == [False, False, True]
    assert server_pids(home) == [infos[0]["pid"]]


def test_stop_then_status_reports_not_running(home: Path):
    started = evstream("server", "start", "-o", "json")
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]

    stopped = evstream("server", "stop", "-o", "pretty")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the embedded dev store (pid {pid})" in stopped.stdout
    assert not pid_alive(pid)

    status = evstream("server", "status", "-o", "json")
    assert status.returncode == 3
    info = json.loads(status.stdout)
    assert info["running"] is False and info["pid"] is None
    assert info["data_dir"] == str(home / "data")

    again = evstream("server", "stop", "-o", "pretty")
    assert again.returncode == 0
    assert "was not running" in again.stdout


def test_server_status_says_where_the_data_lives_and_how_big_it_is(home: Path):
    assert evstream("seed", "-o", "json").returncode == 0
    r = evstream("server", "status", "-o", "json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["running"] is True
    assert info["data_dir"] == str(home / "data")
    assert info["data_bytes"] > 0
    assert "evstream" in {db["name"] for db in info["databases"]}
    sock = str(home / "server.sock").replace("/", "%2F")
    assert info["uri"] == f"mongodb://{sock}/evstream?directConnection=true"

    pretty = evstream("server", "status", "-o", "pretty")
    assert pretty.returncode == 0
    assert "running" in pretty.stdout
    assert str(home / "data") in pretty.stdout
    assert pretty.stderr == ""


def test_server_logs_shows_the_last_lines(home: Path):
    home.mkdir(parents=True)
    (home / "server.log").write_text("".join(f"line {i}\n" for i in range(1, 51)))
    r = evstream("server", "logs", "-n", "3", "-o", "pretty")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "line 48\nline 49\nline 50\n"
    r = evstream("server", "logs", "--lines", "2", "-o", "json")
    assert [json.loads(x) for x in r.stdout.splitlines()] == [
        {"line": "line 49"},
        {"line": "line 50"},
    ]
    assert server_pids(home) == []  # reading the log starts no server


def test_server_logs_without_a_log(home: Path):
    r = evstream("server", "logs")
    assert r.returncode == 0
    assert r.stdout == ""
    assert "no log yet" in r.stderr


def test_server_logs_follow(home: Path):
    home.mkdir(parents=True)
    log = home / "server.log"
    log.write_text("old 1\nold 2\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "evstream", "server", "logs", "-n", "1", "--follow", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == {"line": "old 2"}
        with open(log, "a") as handle:
            handle.write("new 1\nnew 2\n")
        assert json.loads(proc.stdout.readline()) == {"line": "new 1"}
        assert json.loads(proc.stdout.readline()) == {"line": "new 2"}
        # The server restarted with a fresh log: read from its start.
        log.unlink()
        log.write_text("fresh 1\n")
        assert json.loads(proc.stdout.readline()) == {"line": "fresh 1"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
