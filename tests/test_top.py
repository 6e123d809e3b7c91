"""`evstream top` as a person uses it (in a pseudo-terminal), --once and -o json for scripts,
`check --consumers` and `status -o prometheus` through the CLI (docs/operating.md)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from typing import Any

import pytest
from conftest import Cli
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_for

BEAT = "0.5"  # the consumers' heartbeat here: dead after 3 s of silence
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


def publish(cli: Cli, n: int) -> None:
    for i in range(n):
        r = cli("publish", "login", "--stream", f"u{i % 3}", "-o", "json")
        assert r.exit_code == 0, r.stderr


def consumer(cli: Cli, name: str, *args: str) -> subprocess.Popen[str]:
    return cli.popen("watch", "--checkpoint", name, "--from", "start", "-o", "json", *args,
                     stdin=subprocess.DEVNULL, EVSTREAM_HEARTBEAT=BEAT)  # fmt: skip


def stopped_consumer(cli: Cli, name: str) -> None:
    """Two events, and a consumer that handled them and stopped cleanly."""
    publish(cli, 2)
    r = cli.run("watch", "--checkpoint", name, "--from", "start", "--idle-timeout", "0.3",
                "-o", "json", EVSTREAM_HEARTBEAT=BEAT)  # fmt: skip
    assert r.returncode == 0, r.stderr


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


class Screen:
    """evstream top in a pseudo-terminal of 150 x 30: what it drew, and keys to press."""

    def __init__(self, cli: Cli, *args: str) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 150, 0, 0))
        self.before = termios.tcgetattr(slave)
        self.slave = slave
        env = {**os.environ, **cli.env(), "TERM": "xterm-256color", "COLUMNS": "150"}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evstream", "top", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        self.raw = b""

    def read(self) -> str:
        while select.select([self.master], [], [], 0.05)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.raw += chunk
        return self.raw.decode("utf-8", "replace")

    def text(self) -> str:
        """What was drawn, escape sequences taken out."""
        return ANSI.sub("", self.read())

    def frames_since(self, mark: int) -> str:
        self.read()
        return ANSI.sub("", self.raw[mark:].decode("utf-8", "replace"))

    def press(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_top_shows_consumers_live_then_one_dead_after_kill_9_and_q_quits(cli: Cli) -> None:
    publish(cli, 3)
    steady = consumer(cli, "steady")
    victim = consumer(cli, "victim")
    screen = Screen(cli, "--interval", "0.2")
    try:
        rows = [re.compile(rf"(live|idle)\s+watch\s+{name}\b") for name in ("victim", "steady")]
        wait_for(
            lambda: all(row.search(screen.text()) for row in rows),
            60,
            "both consumers to appear alive in top",
        )
        assert "q quits" in screen.text() and "log" in screen.text()
        mark = len(screen.raw)
        victim.kill()
        victim.wait(10)
        dead = re.compile(r"dead\s+watch\s+victim\b")
        wait_for(lambda: dead.search(screen.frames_since(mark)), 60, "top to show it dead")
        later = screen.frames_since(mark)
        assert re.search(r"dead\s+watch\s+victim\b[^\n]*silent", later)
        # Worst first: the dead one is drawn above the one still alive in the last frame.
        last = later[later.rfind("evstream top") :]
        if "steady" in last and "victim" in last:
            assert last.index("victim") < last.index("steady")
        screen.press(b"q")
        assert screen.proc.wait(30) == 0
        drawn = screen.read()
        assert "\x1b[?1049l" in drawn  # the alternate screen was left: the terminal is clean
        assert "Traceback" not in drawn
        after = termios.tcgetattr(screen.slave)
        assert after[3] & termios.ECHO and after[3] & termios.ICANON  # modes restored
        assert after[3] == screen.before[3]
    finally:
        screen.close()
        stop(steady)
        stop(victim)


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_ctrl_c_ends_top_with_exit_0_and_a_clean_terminal(cli: Cli) -> None:
    screen = Screen(cli, "--interval", "0.2")
    try:
        wait_for(lambda: "q quits" in screen.text(), 60, "the first frame")
        os.kill(screen.proc.pid, signal.SIGINT)
        assert screen.proc.wait(30) == 0
        drawn = screen.read()
        assert "\x1b[?1049l" in drawn and "Traceback" not in drawn
        assert termios.tcgetattr(screen.slave)[3] == screen.before[3]
    finally:
        screen.close()


def test_once_prints_one_frame_as_text(cli: Cli) -> None:
    stopped_consumer(cli, "nightly")
    publish(cli, 3)
    r = cli.run("top", "--once", "--interval", "0.1", "-o", "pretty", COLUMNS="150")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("evstream top") == 1
    assert "\x1b[" not in r.stdout  # not a terminal: no colour, no cursor movement
    assert "5 events" in r.stdout
    line = next(line for line in r.stdout.splitlines() if "nightly" in line)
    assert re.search(r"stopped\s+watch\s+nightly\s+\S+\s+3\b", line), line


def test_json_prints_one_object_per_refresh(cli: Cli) -> None:
    publish(cli, 2)
    proc = consumer(cli, "feed")
    top = cli.popen("top", "-o", "json", "--interval", "0.1", stdin=subprocess.DEVNULL)
    try:
        assert top.stdout is not None
        snapshots = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = json.loads(top.stdout.readline())
            snapshots.append(snap)
            rows = {r["checkpoint"]: r for r in snap["consumers"]}
            if len(snapshots) >= 3 and rows.get("feed", {}).get("handled") == 2:
                break
        first, last = snapshots[0], snapshots[-1]
        assert first["log"]["events"] == 2 and first["log"]["newest"]["ts"]["$date"]
        assert isinstance(last["log"]["rate"], (int, float))
        assert isinstance(last["log"]["rate_history"], list)
        feed = {r["checkpoint"]: r for r in last["consumers"]}["feed"]
        for key in ("state", "position_ts", "lag_events", "lag_estimated", "lag_seconds",
                    "rate", "rate_history", "dead_letters", "host", "pid", "seen"):  # fmt: skip
            assert key in feed
        assert feed["pid"] == proc.pid and feed["lag_events"] == 0
        assert feed["state"] in ("live", "idle")
    finally:
        top.send_signal(signal.SIGINT)
        top.communicate(timeout=30)
        stop(proc)
    assert top.returncode == 0


def test_check_consumers_fails_then_holds(cli: Cli) -> None:
    r = cli("check", "--consumers", "--name", "nightly", "-o", "json")
    assert r.exit_code == 7  # nothing by that name yet
    assert json.loads(r.stdout)["findings"][0]["kind"] == "missing"
    stopped_consumer(cli, "nightly")
    assert cli("check", "--consumers").exit_code == 0
    publish(cli, 5)
    r = cli("check", "--consumers", "--max-lag", "4", "-o", "json")
    assert r.exit_code == 7, r.stdout
    report = json.loads(r.stdout)
    assert [f["kind"] for f in report["findings"]] == ["lag"]
    assert "5 events behind" in report["findings"][0]["problem"]
    assert cli("check", "--consumers", "--max-lag", "5").exit_code == 0
    r = cli("check", "--consumers", "--max-lag", "5", "-o", "pretty")
    assert "healthy" in r.stdout


def test_check_consumers_stale_after_kill_9(cli: Cli) -> None:
    proc = consumer(cli, "victim")
    try:
        wait_for(
            lambda: (
                cli("check", "--consumers", "--name", "victim", "--stale", "10s").exit_code == 0
            ),
            60,
            "the consumer's first sign of life",
        )
        proc.kill()
        proc.wait(10)
        r = wait_for(
            lambda: (r := cli("check", "--consumers", "--stale", "1s")).exit_code == 7 and r,
            60,
            "the killed consumer to go stale",
        )
        assert "no sign of life" in r.stdout and str(proc.pid) in r.stdout
        assert cli("check", "--consumers", "--stale", "1h").exit_code == 0
    finally:
        stop(proc)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--consumers", "--max-lag", "soon"], "--max-lag 'soon'"),
        (["--consumers", "--stale", "5"], "--stale '5'"),
        (["--consumers", "--max-dead-letters", "-1"], "--max-dead-letters"),
        (["--max-lag", "5m"], "--max-lag goes with --consumers"),
    ],
)
def test_check_consumers_refuses_bad_thresholds(cli: Cli, args: list[str], message: str) -> None:
    r = cli("check", *args)
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_status_prometheus_parses_with_the_right_values(cli: Cli) -> None:
    stopped_consumer(cli, "nightly")
    publish(cli, 3)
    r = cli("status", "-o", "prometheus")
    assert r.exit_code == 0, r.stderr
    families = {f.name: f for f in text_string_to_metric_families(r.stdout)}
    assert families["evstream_log_events"].samples[0].value == 5

    def value(family: str) -> float:
        samples = [s for s in families[family].samples if s.labels.get("name") == "nightly"]
        assert len(samples) == 1
        return samples[0].value

    assert value("evstream_consumer_lag_events") == 3
    assert value("evstream_consumer_lag_estimated") == 0
    assert value("evstream_consumer_lag_seconds") >= 0
    assert value("evstream_consumer_up") == 0  # it stopped cleanly
    assert value("evstream_consumer_dead_letters") == 0
    assert families["evstream_consumer_state"].samples[0].labels["state"] == "stopped"


def test_prometheus_is_for_status_only(cli: Cli) -> None:
    r = cli("watch", "-o", "prometheus")
    assert r.exit_code == 2 and "--output prometheus is for evstream status" in r.stderr


def test_top_refuses_a_bad_interval(cli: Cli) -> None:
    r = cli("top", "--interval", "0")
    assert r.exit_code == 2 and "--interval" in r.stderr


def test_sigterm_ends_top_with_143(cli: Cli) -> None:
    top = cli.popen("top", "-o", "json", "--interval", "0.1", stdin=subprocess.DEVNULL)
    assert top.stdout is not None
    assert json.loads(top.stdout.readline())["log"]["events"] == 0
    top.send_signal(signal.SIGTERM)
    _, err = top.communicate(timeout=30)
    assert top.returncode == 143 and "Traceback" not in err
