"""The conventions users of mongosh, mongoimport, kcat and the NATS CLI expect, checked as they
would check them: MONGODB_URI, data on stdout and the rest on stderr, progress and colour only
where they belong, help with examples that never loads the driver, and a JSON round trip."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evstream.cli import app

SGR = re.compile(rb"\x1b\[([0-9;]*)m")
ANSI = re.compile(rb"\x1b\[")


def plain(data: bytes) -> bytes:
    """`data` without its SGR (style) sequences."""
    return SGR.sub(b"", data)


def colour_codes(data: bytes) -> list[str]:
    """The SGR sequences in `data` that set a foreground or background colour."""
    found = []
    for match in SGR.finditer(data):
        params = [p for p in match.group(1).decode().split(";") if p]
        for p in params:
            n = int(p)
            if 30 <= n <= 38 or 40 <= n <= 48 or 90 <= n <= 97 or 100 <= n <= 107:
                found.append(match.group(0).decode())
                break
    return found


def run_tty(
    args: list[str],
    env: dict[str, str],
    *,
    stdout_tty: bool,
    stderr_tty: bool,
    stdin: Any = subprocess.DEVNULL,
    timeout: float = 60,
) -> tuple[int, bytes, bytes]:
    """Run evstream with stdout and/or stderr on a pseudo-terminal (100 columns) or a pipe."""
    ends = []
    for is_tty in (stdout_tty, stderr_tty):
        if is_tty:
            reader, writer = pty.openpty()
            fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        else:
            reader, writer = os.pipe()
        ends.append((reader, writer))
    full_env = {**os.environ, "TERM": "xterm-256color", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "evstream", *args],
        stdin=stdin,
        stdout=ends[0][1],
        stderr=ends[1][1],
        env=full_env,
    )
    for _, writer in ends:
        os.close(writer)
    output = {reader: b"" for reader, _ in ends}
    open_fds = set(output)
    deadline = time.monotonic() + timeout
    while open_fds:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"evstream {args} did not finish in {timeout} s")
        ready, _, _ = select.select(list(open_fds), [], [], 0.2)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other side closed
                chunk = b""
            if chunk:
                output[fd] += chunk
            else:
                open_fds.discard(fd)
                os.close(fd)
    code = proc.wait(timeout=timeout)
    return code, output[ends[0][0]], output[ends[1][0]]


def ndjson_file(path: Path, count: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"type": "login", "stream": f"user{i % 50}", "data": {"n": i}}) + "\n"
            for i in range(count)
        )
    )
    return path


# --- where evstream connects ---------------------------------------------------------------------


def invoke(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def test_mongodb_uri_is_honoured_without_evstream_uri(server_uri, db_name, db):
    r = invoke("publish", "login", "-s", "alice", "-o", "json", MONGODB_URI=server_uri)
    assert r.exit_code == 0, r.stderr
    assert db_name != "evstream"
    r = invoke(
        "--db",
        db_name,
        "--verbose",
        "publish",
        "login",
        "-s",
        "alice",
        "-o",
        "json",
        MONGODB_URI=server_uri,
    )
    assert r.exit_code == 0, r.stderr
    assert [d["stream"] for d in db.events.find()] == ["alice"]
    assert "using MongoDB at" in r.stderr  # not the embedded dev store


DEAD = "mongodb://127.0.0.1:9/?directConnection=true"  # the discard port: nothing answers


@pytest.mark.parametrize(
    ("option", "env", "reaches"),
    [
        (None, {"MONGODB_URI": DEAD}, False),  # MONGODB_URI is really used
        (None, {"EVSTREAM_URI": "good", "MONGODB_URI": DEAD}, True),
        ("good", {"EVSTREAM_URI": DEAD, "MONGODB_URI": DEAD}, True),
    ],
)
def test_uri_precedence_through_the_cli(server_uri, db_name, db, option, env, reaches):
    env = {k: server_uri if v == "good" else v for k, v in env.items()}
    args = ["--db", db_name, "status", "-o", "json"]
    if option:
        args = ["--uri", server_uri, *args]
    r = invoke(*args, EVSTREAM_TIMEOUT_MS="500", **env)
    if reaches:
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["database"] == db_name
    else:
        assert r.exit_code == 3
        assert r.stdout == ""
        assert "127.0.0.1:9" in r.stderr


# --- stdout is for data --------------------------------------------------------------------------


def test_json_data_on_stdout_notices_and_warnings_on_stderr(cli, db):
    r = cli.run(
        "publish",
        "login",
        "-s",
        "alice",
        "-d",
        '{"password": "hunter2"}',
        "-o",
        "json",
        "--verbose",
    )
    assert r.returncode == 0, r.stderr
    [line] = r.stdout.splitlines()
    assert json.loads(line)["data"] == {"password": "[redacted]"}
    assert "using MongoDB at" in r.stderr
    assert "warning: redacted" in r.stderr
    assert "using" not in r.stdout and "warning" not in r.stdout

    r = cli.run("status", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 and json.loads(r.stdout)["counts"]["events"] == 1


def test_pretty_data_on_stdout_notices_on_stderr(cli, db):
    r = cli.run("publish", "login", "-s", "alice", "-o", "pretty", "--verbose")
    assert r.returncode == 0, r.stderr
    assert "login alice@1" in r.stdout
    assert "using MongoDB at" in r.stderr and "using MongoDB at" not in r.stdout


def test_errors_go_to_stderr_alone(cli, db):
    r = cli.run("publish", "login", "-s", "alice", "-d", "not json", "-o", "json")
    assert r.returncode == 2
    assert r.stdout == ""
    [line] = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "--data" in line
    assert "Traceback" not in r.stderr


# --- progress and colour -------------------------------------------------------------------------


def test_progress_only_on_a_terminal(cli, db, tmp_path):
    events = ndjson_file(tmp_path / "events.ndjson", 3000)
    code, out, err = run_tty(
        ["publish", "--file", str(events), "-o", "json"],
        cli.env(),
        stdout_tty=False,
        stderr_tty=True,
    )
    assert code == 0, err
    assert b"publishing" in err or b"checking" in err  # the bar was drawn on the terminal
    assert json.loads(out)["published"] == 3000  # stdout, a pipe, got the summary only

    db.events.drop()
    code, out, err = run_tty(
        ["publish", "--file", str(events), "-o", "json"],
        cli.env(),
        stdout_tty=False,
        stderr_tty=False,
    )
    assert code == 0, err
    assert b"publishing" not in err and b"checking" not in err
    assert not ANSI.search(err)
    assert json.loads(out)["published"] == 3000


def test_force_color_does_not_draw_progress_into_a_pipe(cli, db, tmp_path):
    events = ndjson_file(tmp_path / "events.ndjson", 3000)
    code, out, err = run_tty(
        ["publish", "--file", str(events), "-o", "json"],
        cli.env(FORCE_COLOR="1"),
        stdout_tty=False,
        stderr_tty=False,
    )
    assert code == 0, err
    assert b"publishing" not in err and b"checking" not in err, (
        "a progress bar was drawn into a pipe because FORCE_COLOR makes rich's Console claim a "
        "terminal; progress should follow whether stderr is a terminal"
    )
    assert json.loads(out)["published"] == 3000


def test_colour_on_a_terminal_and_no_color_honoured(cli, db):
    args = ["publish", "login", "-s", "alice", "-d", '{"username": "alice"}']
    code, out, _ = run_tty(args, cli.env(), stdout_tty=True, stderr_tty=True)
    assert code == 0
    assert b"alice@1" in plain(out)
    assert colour_codes(out), out

    code, out, err = run_tty(args, cli.env(NO_COLOR="1"), stdout_tty=True, stderr_tty=True)
    assert code == 0
    assert b"alice@2" in plain(out)  # still pretty: NO_COLOR removes colour, not formatting
    assert colour_codes(out) == [] and colour_codes(err) == []


def test_force_color_colours_piped_pretty_output(cli, db):
    args = ["publish", "login", "-s", "alice", "-o", "pretty"]
    code, out, _ = run_tty(args, cli.env(), stdout_tty=False, stderr_tty=False)
    assert code == 0 and b"alice@1" in out
    assert not ANSI.search(out)  # piped: plain text

    code, out, _ = run_tty(args, cli.env(FORCE_COLOR="1"), stdout_tty=False, stderr_tty=False)
    assert code == 0 and b"alice@2" in plain(out)
    assert colour_codes(out), out


def test_force_color_keeps_json_when_piped(cli, db):
    """FORCE_COLOR asks for colour, not for a different format: piped `auto` output stays JSON
    (README, "Output": pretty on a terminal, JSON lines when piped)."""
    code, out, err = run_tty(
        ["publish", "login", "-s", "alice"],
        cli.env(FORCE_COLOR="1"),
        stdout_tty=False,
        stderr_tty=False,
    )
    assert code == 0, err
    assert out.startswith(b"{"), (
        "FORCE_COLOR turned piped output pretty (rich's Console.is_terminal is forced true by "
        f"FORCE_COLOR; the format should follow whether stdout is a terminal): {out!r}"
    )
    assert json.loads(out)["stream"] == "alice"


def test_status_on_a_terminal_is_coloured_and_fits(cli, db):
    cli.run("seed", "-o", "json")
    code, out, err = run_tty(["status"], cli.env(), stdout_tty=True, stderr_tty=False)
    assert code == 0, err
    assert colour_codes(out)
    text = plain(out).decode()
    assert "4 events in 2 streams" in text
    assert all(len(line) <= 100 for line in text.splitlines() if "mongodb://" not in line)


# --- help ----------------------------------------------------------------------------------------


def all_commands() -> list[list[str]]:
    """Every visible command and group, as the words that name it."""
    import typer.main

    root = typer.main.get_command(app)
    found: list[list[str]] = []

    def walk(group: Any, path: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            if getattr(command, "hidden", False):
                continue
            found.append([*path, name])
            walk(command, [*path, name])

    walk(root, [])
    return found


def test_every_command_has_a_description_and_an_example():
    problems = []
    for words in all_commands():
        r = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "100"})
        assert r.exit_code == 0, (words, r.output)
        text = r.stdout
        _, _, rest = text.partition("\n\n")
        description = rest.strip().splitlines()[0] if rest.strip() else ""
        name = "evstream " + " ".join(words)
        if not description or description.startswith(("Options", "Arguments")):
            problems.append(f"{name}: no description")
        if not re.search(r"^\s+evstream\b", text, re.MULTILINE):
            problems.append(f"{name}: no example")
        if "[bold]" in text or "[/" in text:
            problems.append(f"{name}: shows rich markup as text")
    assert problems == []


def test_help_never_imports_the_driver():
    for words in [[], *all_commands()]:
        r = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "evstream", *words, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, (words, r.stderr[-2000:])
        loaded = {
            line.rsplit("|", 1)[1].strip().split(".")[0]
            for line in r.stderr.splitlines()
            if line.startswith("import time:") and "|" in line
        }
        assert not loaded & {"pymongo", "bson"}, f"`evstream {' '.join(words)} --help` did"


# --- the JSON round trip -------------------------------------------------------------------------

ROUND_TRIP_EVENTS = [
    {"id": "evt-1", "type": "session.started", "stream": "alice", "data": {"name": "Alice"}},
    {"id": "evt-2", "type": "login", "stream": "alice", "data": {"username": "alice"}},
    {"type": "session.started", "stream": "bob", "data": {"name": "Bøb ✓", "tags": ["a", "b"]}},
    {
        "type": "profile.updated",
        "stream": "bob",
        "data": {"email": "bob@example.com", "n": 3, "ratio": 0.25, "flag": None, "nested": {}},
        "meta": {"correlation_id": "c-1", "source": "test"},
    },
    {
        "type": "order.placed",
        "stream": "carol",
        "data": {"total": 12.5, "at": {"$date": "2026-01-02T03:04:05.678Z"}},
        "ts": {"$date": "2026-01-02T03:04:06Z"},
    },
    {"type": "logout", "stream": "alice", "data": {}},
]


def test_watch_json_piped_into_publish_reproduces_the_events(cli, client, db, tmp_path):
    """`evstream watch --from start --output json | evstream publish --file -` into another
    database stores the same events: ids, streams, versions, types, data, meta and ts."""
    source = tmp_path / "events.ndjson"
    source.write_text("".join(json.dumps(e) + "\n" for e in ROUND_TRIP_EVENTS))
    r = cli.run("publish", "--file", str(source), "-o", "json")
    assert r.returncode == 0, r.stderr
    count = len(ROUND_TRIP_EVENTS)

    target_db = f"{cli.db}_copy"
    env = {**os.environ, **cli.env()}
    try:
        watcher = subprocess.Popen(
            [sys.executable, "-m", "evstream", "watch", "--from", "start"]
            + ["--output", "json", "--limit", str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        publisher = subprocess.run(
            [sys.executable, "-m", "evstream", "--db", target_db, "publish", "--file", "-"],
            stdin=watcher.stdout,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert watcher.stdout is not None
        watcher.stdout.close()
        assert watcher.wait(timeout=60) == 0, watcher.stderr.read() if watcher.stderr else ""
        assert publisher.returncode == 0, publisher.stderr
        original = list(db.events.find().sort("_id", 1))
        copied = list(client[target_db].events.find().sort("_id", 1))
        fields = ("_id", "stream", "version", "type", "data", "meta", "ts")
        assert len(original) == count
        assert [{k: d.get(k) for k in fields} for d in copied] == [
            {k: d.get(k) for k in fields} for d in original
        ]
    finally:
        client.drop_database(target_db)


def test_every_package_of_evstream_is_installed() -> None:
    """`pip install .` installs what pyproject lists: a subpackage left out breaks every command
    outside an editable install (it once left out evstream.storage)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "evstream").rglob("__init__.py")
    }
    assert found == listed
