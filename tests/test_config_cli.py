"""`evstream config` and configuration files through the real CLI: what each command resolves
from a project file and a context, and a bad file as one line with exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evstream.cli import app

HERE = Path(__file__).parent


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory as the working directory, and an empty user config directory."""
    root = tmp_path / "project"
    (root / "sub").mkdir(parents=True)
    monkeypatch.chdir(root / "sub")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return root


def user_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xdg" / "evstream" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def invoke(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def report(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    return {k: (v["value"], v["source"]) for k, v in json.loads(result.stdout)["settings"].items()}


def test_config_shows_where_each_setting_came_from(project: Path, tmp_path: Path) -> None:
    user = user_file(tmp_path, '[contexts.prod]\nuri_env = "PROD_URI"\ndb = "shop"\n')
    (project / "evstream.toml").write_text('context = "prod"\noutput = "pretty"\n')
    result = invoke("config", "-o", "json", PROD_URI="mongodb://app:hunter2@db1:27017/x")
    shown = report(result)
    assert shown["context"] == ("prod", f"file {project / 'evstream.toml'}:1")
    assert shown["uri"] == (
        "mongodb://app:****@db1:27017/x",
        f"context prod ({user}:2, through $PROD_URI)",
    )
    assert shown["db"] == ("shop", f"context prod ({user}:3)")
    assert shown["output"] == ("json", "option --output")
    assert "hunter2" not in result.stdout + result.stderr
    # The variable beats the files, the option beats the variable; the option works after the
    # command too.
    shown = report(invoke("config", "-o", "json", "--db", "opt", EVSTREAM_DB="env", PROD_URI="x"))
    assert shown["db"] == ("opt", "option --db")
    shown = report(invoke("config", "-o", "json", EVSTREAM_DB="env", PROD_URI="x"))
    assert shown["db"] == ("env", "env EVSTREAM_DB")
    shown = report(invoke("config", EVSTREAM_OUTPUT="json", PROD_URI="x"))
    assert shown["output"] == ("json", "env EVSTREAM_OUTPUT")


def test_config_pretty(project: Path) -> None:
    (project / "evstream.toml").write_text('db = "shop"\n')
    result = invoke("config", "-o", "pretty")
    assert result.exit_code == 0, result.stderr
    assert f"db           shop  ← file {project / 'evstream.toml'}:1" in result.stdout
    assert "uri          (none)  ← default (the embedded dev store)" in result.stdout


def test_context_option_and_variable(project: Path, tmp_path: Path) -> None:
    user_file(tmp_path, '[contexts.a]\ndb = "da"\n[contexts.b]\ndb = "db_b"\n')
    assert report(invoke("--context", "a", "config", "-o", "json"))["db"][0] == "da"
    assert report(invoke("config", "--context", "b", "-o", "json"))["db"][0] == "db_b"
    shown = report(invoke("config", "-o", "json", EVSTREAM_CONTEXT="b"))
    assert shown["context"] == ("b", "env EVSTREAM_CONTEXT")


@pytest.mark.parametrize(
    ("args", "text", "expected"),
    [
        (["config"], 'db = "x"\nurl = "y"\n', "evstream.toml:2: unknown key 'url'"),
        (["status"], 'db = "x\n', "evstream.toml:1: not valid TOML"),
        (["--context", "qa", "publish", "t", "-s", "a"], "", "--context: no context named 'qa'"),
    ],
)
def test_a_bad_file_stops_every_command_with_one_line(
    project: Path, args: list[str], text: str, expected: str
) -> None:
    (project / "evstream.toml").write_text(text)
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert result.stdout == ""


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_file_others_can_change_is_warned_about(project: Path) -> None:
    path = project / "evstream.toml"
    path.write_text('db = "shop"\n')
    path.chmod(0o666)
    result = invoke("config", "-o", "json")
    assert result.exit_code == 0
    assert f"warning: {path} can be changed by other users" in result.stderr


def test_rebuild_loads_the_projections_the_project_file_names(
    project: Path, server_uri: str, db_name: str, db: Any
) -> None:
    """As a user runs it: `evstream rebuild carts` from a subdirectory of the project."""
    (project / "models").mkdir()
    shutil.copy(HERE / "projections" / "carts.py", project / "models" / "carts.py")
    (project / "evstream.toml").write_text(f'db = "{db_name}"\nprojections = ["models/carts.py"]\n')
    env = {**os.environ, "EVSTREAM_URI": server_uri}
    published = subprocess.run(
        [
            sys.executable,
            "-m",
            "evstream",
            "publish",
            "cart.created",
            "-s",
            "c1",
            "-d",
            '{"owner": "al"}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert published.returncode == 0, published.stderr
    assert db.events.count_documents({}) == 1  # in the database that the file names
    result = subprocess.run(
        [sys.executable, "-m", "evstream", "rebuild", "carts", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert list(db.carts.find({}, {"_id": 1, "owner": 1})) == [{"_id": "c1", "owner": "al"}], (
        result.stdout + result.stderr
    )
