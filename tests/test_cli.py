"""The command line itself: global options, usage errors, --version."""

from __future__ import annotations

from typing import Any

import pytest
from typer.main import get_command

from evstream import __version__
from evstream.cli import app, hoist_global_options


def test_version(cli: Any) -> None:
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"evstream {__version__}"


def test_unknown_command_is_one_line_exit_2(cli: Any) -> None:
    r = cli("frobnicate")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "error: No such command 'frobnicate'. (see 'evstream --help')"
    ]


def test_bad_output_mode(cli: Any) -> None:
    r = cli("--output", "xml", "seed")
    assert r.exit_code == 2 and "'xml' is not one of 'auto', 'pretty', 'json'" in r.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["seed", "-o", "json"], ["-o", "json", "seed"]),
        (
            ["publish", "t", "-s", "a", "--output=json", "--debug"],
            ["--output=json", "--debug", "publish", "t", "-s", "a"],
        ),
        (["--db", "x", "publish", "t", "--db", "y"], ["--db", "x", "--db", "y", "publish", "t"]),
        # an option's value that looks like a global option stays the value
        (
            ["publish", "t", "-s", "a", "--data", "--debug"],
            ["publish", "t", "-s", "a", "--data", "--debug"],
        ),
        (["publish", "t", "--", "-o"], ["publish", "t", "--", "-o"]),
        (["server", "status", "-o", "json"], ["-o", "json", "server", "status"]),
        (["--help"], ["--help"]),
        (["nope", "-o", "json"], ["nope", "-o", "json"]),
    ],
)
def test_global_options_after_the_command(argv: list[str], expected: list[str]) -> None:
    assert hoist_global_options(get_command(app), argv) == expected


def test_env_var_db_and_output(cli: Any, db: Any, client: Any) -> None:
    r = cli("seed", EVSTREAM_OUTPUT="json")
    assert r.stdout.startswith("{")
    assert client[cli.db].events.count_documents({}) == 4


def test_no_command_shows_the_help_not_an_error(cli: Any) -> None:
    for args in ([], ["server"]):
        r = cli(*args)
        assert r.exit_code == 2
        assert r.stderr.startswith("Usage: evstream") and "error:" not in r.stderr
        assert "Commands:" in r.stderr
