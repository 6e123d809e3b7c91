"""Liveness recorded by real consumers and read back by the monitor (docs/operating.md):
watch --checkpoint, a part, --exec with retries and dead letters, rebuild --follow; kill -9,
a clean stop, and lag in events and seconds."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from test_projection import CARTS
from waiting import wait_for

from evstream.monitor import Monitor, Thresholds, consumer_findings
from evstream.settings import Settings
from evstream.storage import connect

BEAT = "0.5"  # EVSTREAM_HEARTBEAT for these consumers: dead after 3 s of silence


@pytest.fixture
def monitor(cli: Cli) -> Any:
    store = connect(Settings(uri=cli.uri, db=cli.db), lambda message: None)
    yield Monitor(store)
    store.close()


def rows(monitor: Monitor) -> dict[str, dict[str, Any]]:
    return {str(r["checkpoint"]): r for r in monitor.snapshot()["consumers"]}


def publish(cli: Cli, n: int, stream: str = "s") -> None:
    for i in range(n):
        r = cli("publish", "login", "--stream", f"{stream}{i % 3}", "-o", "json")
        assert r.exit_code == 0, r.stderr


def start(cli: Cli, *args: str) -> subprocess.Popen[str]:
    return cli.popen(*args, stdin=subprocess.DEVNULL, EVSTREAM_HEARTBEAT=BEAT)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_a_watch_is_live_then_dead_after_kill_9(cli: Cli, monitor: Monitor) -> None:
    publish(cli, 3)
    proc = start(cli, "watch", "--checkpoint", "mailer", "--from", "start", "-o", "json")
    try:
        row = wait_for(
            lambda: rows(monitor).get("mailer", {}).get("handled") == 3 and rows(monitor)["mailer"],
            30,
            "the watch's liveness",
        )
        assert row["pid"] == proc.pid and row["host"] and row["version"]
        assert row["kind"] == "watch" and row["part"] is None
        assert row["state"] in ("live", "idle") and row["lag_events"] == 0
        proc.kill()
        proc.wait(10)
        dead = wait_for(
            lambda: rows(monitor)["mailer"]["state"] == "dead" and rows(monitor)["mailer"],
            30,
            "the killed watch to show as dead",
        )
        assert dead["silent_seconds"] > dead["dead_after_seconds"]
        found = consumer_findings([dead], Thresholds())
        assert [f["kind"] for f in found] == ["stale"] and str(proc.pid) in found[0]["problem"]
    finally:
        stop(proc)


def test_an_idle_watch_keeps_saying_it_is_alive(cli: Cli, monitor: Monitor) -> None:
    proc = start(cli, "watch", "--checkpoint", "quiet", "-o", "json")
    try:
        first = wait_for(lambda: rows(monitor).get("quiet"), 30, "the watch's checkpoint")
        wait_for(
            lambda: rows(monitor)["quiet"]["seen"] > first["seen"], 30, "a heartbeat while idle"
        )
        assert rows(monitor)["quiet"]["state"] == "idle"
    finally:
        stop(proc)


def test_a_clean_stop_says_stopped_and_lag_counts_what_came_since(
    cli: Cli, monitor: Monitor
) -> None:
    publish(cli, 2)
    r = cli.run("watch", "--checkpoint", "nightly", "--from", "start", "--idle-timeout", "0.5",
                "-o", "json", EVSTREAM_HEARTBEAT=BEAT)  # fmt: skip
    assert r.returncode == 0, r.stderr
    row = rows(monitor)["nightly"]
    assert row["state"] == "stopped" and row["lag_events"] == 0 and row["lag_seconds"] == 0
    publish(cli, 4)
    row = rows(monitor)["nightly"]
    assert row["state"] == "stopped"
    assert row["lag_events"] == 4 and not row["lag_estimated"]
    assert row["lag_seconds"] >= 0
    assert consumer_findings([row], Thresholds(max_lag_events=3))[0]["kind"] == "lag"
    assert consumer_findings([row], Thresholds(max_lag_events=4)) == []


def test_each_part_is_a_row_of_its_own(cli: Cli, monitor: Monitor) -> None:
    publish(cli, 6)
    procs = [
        start(
            cli,
            "watch",
            "--checkpoint",
            "group",
            "--partition",
            f"{i}/2",
            "--from",
            "start",
            "-o",
            "json",
        )  # fmt: skip
        for i in (1, 2)
    ]
    try:
        found = wait_for(
            lambda: (
                {r["part"]: r for r in rows(monitor).values() if r["name"] == "group"}.keys()
                == {"1/2", "2/2"}
                and rows(monitor)
            ),
            30,
            "both parts",
        )
        pids = {found[f"group part {i} of 2"]["pid"] for i in (1, 2)}
        assert pids == {p.pid for p in procs}
        wait_for(
            lambda: sum(rows(monitor)[f"group part {i} of 2"]["handled"] or 0 for i in (1, 2)) >= 6,
            30,
            "the parts' handled counts",
        )
    finally:
        for proc in procs:
            stop(proc)


def test_exec_reports_retries_and_dead_letters(cli: Cli, monitor: Monitor, tmp_path: Path) -> None:
    publish(cli, 3)
    handler = tmp_path / "fail.sh"
    handler.write_text("#!/bin/sh\ncat >/dev/null\nexit 1\n")
    handler.chmod(0o755)
    r = cli.run("watch", "--checkpoint", "poison", "--from", "start", "--exec", str(handler),
                "--retries", "1", "--retry-backoff", "0.01", "--on-failure", "dead-letter",
                "--batch-wait", "0.05", "--idle-timeout", "1", EVSTREAM_HEARTBEAT=BEAT)  # fmt: skip
    assert r.returncode == 0, r.stderr
    row = rows(monitor)["poison"]
    assert row["dead_letters"] == 3 and row["state"] == "stopped"
    assert row["retries"] >= 1
    found = consumer_findings([row], Thresholds())
    assert [f["kind"] for f in found] == ["dead_letters"]
    assert consumer_findings([row], Thresholds(max_dead_letters=3)) == []


def test_a_follower_is_a_row_with_its_liveness(cli: Cli, monitor: Monitor, db: Any) -> None:
    proc = start(cli, "rebuild", "carts", "--module", CARTS, "--follow", "-o", "json")
    try:
        row = wait_for(
            lambda: (r := rows(monitor).get("carts")) and r["kind"] == "follow" and r,
            60,
            "the follower's liveness",
        )
        assert row["pid"] == proc.pid and row["state"] in ("idle", "live")
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
        stopped = wait_for(
            lambda: rows(monitor)["carts"]["state"] == "stopped" and rows(monitor)["carts"],
            30,
            "the follower to say it stopped",
        )
        assert stopped["kind"] == "follow"
    finally:
        stop(proc)


def test_a_long_running_handler_does_not_look_dead(
    cli: Cli, monitor: Monitor, tmp_path: Path
) -> None:
    """The watch waits for CMD for longer than its dead bound (3 s here): its liveness keeps
    coming meanwhile."""
    started, done = tmp_path / "started", tmp_path / "done"
    handler = tmp_path / "slow.sh"
    handler.write_text(f"#!/bin/sh\ncat >/dev/null\ntouch {started}\nsleep 6\ntouch {done}\n")
    handler.chmod(0o755)
    proc = cli.popen("watch", "--checkpoint", "slow", "--exec", str(handler), "--batch-wait",
                     "0.05", stdin=subprocess.DEVNULL, EVSTREAM_HEARTBEAT="0.5")  # fmt: skip
    try:
        wait_for(lambda: rows(monitor).get("slow"), 30, "the watch's checkpoint")
        publish(cli, 1)
        wait_for(started.exists, 30, "the handler to start")
        states = []
        while not done.exists():
            states.append(rows(monitor)["slow"]["state"])
        assert states and "dead" not in states, states
    finally:
        stop(proc)


def test_sigterm_is_a_clean_stop(cli: Cli, monitor: Monitor) -> None:
    proc = start(cli, "watch", "--checkpoint", "termed", "-o", "json")
    try:
        wait_for(lambda: rows(monitor).get("termed"), 30, "the watch's checkpoint")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
        assert rows(monitor)["termed"]["state"] == "stopped"
    finally:
        stop(proc)
