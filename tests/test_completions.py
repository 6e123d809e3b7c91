"""Shell completion: the scripts in completions/ are what the CLI generates, and completing
through them works, quickly, without importing pymongo."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPLETIONS = ROOT / "completions"
SHELLS = ("bash", "zsh", "fish")
HEAVY = ("pymongo", "bson")


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", COMPLETIONS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """python -X importtime -m evstream ARGS: stdout, and stderr listing every import."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "evstream", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def imported(stderr: str) -> set[str]:
    """Top-level modules named in `-X importtime` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def complete_bash(words: str) -> list[str]:
    """What the CLI answers bash for the command line `words` (cursor on the last word)."""
    parts = words.split(" ")
    r = run(_EVSTREAM_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(len(parts) - 1))
    assert r.returncode == 0, r.stderr[-2000:]
    assert not imported(r.stderr) & set(HEAVY), "completion imported pymongo/bson"
    return r.stdout.split()


# --- drift ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_script_is_what_the_cli_generates(shell):
    committed = (COMPLETIONS / f"evstream.{shell}").read_text()
    assert committed == generator().script(shell), (
        f"completions/evstream.{shell} drifted; run: python completions/generate.py"
    )
    # ... and what `evstream --show-completion SHELL` prints (the shell named, not detected).
    r = subprocess.run(
        [sys.executable, "-m", "evstream", "--show-completion", shell],
        capture_output=True,
        text=True,
        env={**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"},
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == committed


def test_generator_check_mode(tmp_path):
    gen = generator()
    assert gen.main(["--check"]) == 0
    assert gen.main(["--check", "--dir", str(tmp_path)]) == 1  # nothing there yet
    assert gen.main(["--dir", str(tmp_path)]) == 0
    assert gen.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "evstream.zsh").write_text("# edited by hand\n")
    assert gen.main(["--check", "--dir", str(tmp_path)]) == 1


# --- completing ----------------------------------------------------------------------------------


def test_completes_commands_without_importing_pymongo():
    words = complete_bash("evstream ")
    assert {"publish", "seed", "status", "server"} <= set(words)


def test_completes_a_prefix():
    words = complete_bash("evstream se")
    assert {"seed", "server"} <= set(words)
    assert all(w.startswith("se") for w in words)


def test_completes_server_subcommands_and_options():
    assert set(complete_bash("evstream server ")) == {"start", "restart", "stop", "status", "logs"}
    assert {"--lines", "--follow"} <= set(complete_bash("evstream server logs --"))
    assert "--estimate" in complete_bash("evstream status --")


def test_completes_after_global_options():
    assert complete_bash("evstream --db shop ser") == ["server"]


def test_zsh_and_fish_protocols():
    r = run(_EVSTREAM_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="evstream server ")
    assert r.returncode == 0
    assert all(f'"{name}"' in r.stdout for name in ("start", "restart", "stop", "status", "logs"))
    assert not imported(r.stderr) & set(HEAVY)
    r = run(
        _EVSTREAM_COMPLETE="complete_fish",
        _TYPER_COMPLETE_FISH_ACTION="get-args",
        _TYPER_COMPLETE_ARGS="evstream server ",
    )
    assert r.returncode == 0
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == [
        "start",
        "restart",
        "stop",
        "status",
        "logs",
    ]
    assert not imported(r.stderr) & set(HEAVY)


def installed_evstream() -> str | None:
    """The `evstream` executable beside this Python (an installed or editable checkout)."""
    candidate = Path(sys.executable).parent / "evstream"
    return str(candidate) if candidate.exists() else shutil.which("evstream")


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_bash_script_completes_in_bash():
    exe = installed_evstream()
    if exe is None:
        pytest.skip("no evstream executable on PATH (pip install -e . puts one there)")
    script = COMPLETIONS / "evstream.bash"
    program = (
        f"source '{script}'\n"
        "COMP_WORDS=(evstream server st); COMP_CWORD=2\n"
        "_evstream_completion evstream\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["start", "stop", "status"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_the_fish_script_completes_in_fish():
    exe = installed_evstream()
    if exe is None:
        pytest.skip("no evstream executable on PATH")
    script = COMPLETIONS / "evstream.fish"
    env = {**os.environ, "PATH": f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(
        ["fish", "--no-config", "-c", f"source '{script}'; complete -C'evstream server st'"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["start", "stop", "status"]


# --- values and global options -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("evstream watch --op ", ["insert", "update", "replace", "delete"]),
        ("evstream watch --op up", ["update"]),
        ("evstream -o ", ["auto", "pretty", "json", "prometheus"]),
        ("evstream watch -o ", ["auto", "pretty", "json", "prometheus"]),  # a global option after a command
        ("evstream status --output p", ["pretty", "prometheus"]),
        ("evstream bench ", ["publish", "rebuild", "watch", "exec", "all"]),
    ],
)
def test_completes_option_values(words: str, expected: list[str]) -> None:
    assert complete_bash(words) == expected


def test_completes_global_options_after_a_command() -> None:
    assert complete_bash("evstream watch --ou") == ["--output"]
    after_logs = complete_bash("evstream server logs --")
    assert {"--lines", "--follow", "--uri", "--db", "--output", "--quiet", "--verbose"} <= set(
        after_logs
    )
    assert "--version" not in after_logs and "--show-completion" not in after_logs
    assert "--quiet" in complete_bash("evstream publish --q")


def test_bench_workloads_offered_are_the_benchmarks_there_are() -> None:
    from evstream.bench import RUNNERS
    from evstream.cli.bench import Workload

    assert [w.value for w in Workload] == [*RUNNERS, "all"]


def test_help_does_not_import_pymongo() -> None:
    for args in (["--help"], ["watch", "--help"], ["publish", "--help"], ["server", "--help"]):
        r = run(*args)
        assert r.returncode == 0, r.stderr[-2000:]
        assert not imported(r.stderr) & set(HEAVY), f"{args} imported pymongo/bson"


# --- names the user gave: projections, checkpoints -------------------------------------------


def test_completes_projection_names(monkeypatch: pytest.MonkeyPatch) -> None:
    carts = str(Path(__file__).parent / "projections" / "carts.py")
    r = run(
        _EVSTREAM_COMPLETE="complete_bash",
        COMP_WORDS="evstream rebuild ",
        COMP_CWORD="2",
        EVSTREAM_PROJECTIONS=carts,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["carts", "sessions"]
    assert not imported(r.stderr) & set(HEAVY)  # a projection module needs no driver
    r = run(_EVSTREAM_COMPLETE="complete_bash", COMP_WORDS="evstream rebuild s", COMP_CWORD="2")
    assert r.stdout.split() == ["sessions"]


def test_completes_checkpoint_names_from_the_server(cli: Any, db: Any) -> None:
    db.evstream_checkpoints.insert_many([{"_id": "mailer"}, {"_id": "audit"}])
    r = run(
        _EVSTREAM_COMPLETE="complete_bash",
        COMP_WORDS="evstream watch --checkpoint ",
        COMP_CWORD="3",
        EVSTREAM_URI=cli.uri,
        EVSTREAM_DB=cli.db,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["audit", "mailer"]


def test_checkpoint_completion_without_a_server_offers_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = run(
        _EVSTREAM_COMPLETE="complete_bash",
        COMP_WORDS="evstream watch -c ",
        COMP_CWORD="3",
        EVSTREAM_URI=f"mongodb://127.0.0.1:{port}/",
        EVSTREAM_HOME=str(tmp_path),
    )
    assert r.returncode == 0 and r.stdout.split() == []
    assert not (tmp_path / "server.json").exists()  # the dev store was not started for it
