"""The command line itself: global options, usage errors, --version."""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.main import get_command

from evstream import __version__
from evstream.cli import app
from evstream.cli.app import hoist_global_options


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


# --- help ----------------------------------------------------------------------------------------


def all_commands() -> list[tuple[str, Any]]:
    """(path, command) for every command and subcommand."""
    found = []

    def walk(prefix: str, command: Any) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            found.append((f"{prefix} {name}".strip(), sub))
            walk(f"{prefix} {name}", sub)

    walk("", get_command(app))
    return found


def test_help_names_values_and_lists_choices(cli: Any) -> None:
    top = cli("--help").stdout
    assert "-o, --output auto|pretty|json|prometheus" in top
    watch = cli("watch", "--help").stdout
    assert "--op insert|update|replace|delete" in watch
    assert "-n, --limit N" in watch and "--idle-timeout SECONDS" in watch
    assert "bench [OPTIONS] [WORKLOAD]" in cli("bench", "--help").stdout.replace(
        "workload", "WORKLOAD"
    )
    for path, _ in all_commands():
        text = cli(*path.split(), "--help").stdout
        assert not re.search(r"<(str|int|float|text)[^>]*>", text), (path, text)


def test_command_summaries_are_whole_sentences(cli: Any) -> None:
    for args in ([], ["server"]):
        text = cli(*args, "--help").stdout
        commands = text.split("Commands:", 1)[1].split("\n\n", 1)[0]
        entries = re.split(r"\n  (?=\S)", "\n" + commands.strip("\n"))
        summaries = [" ".join(e.split()[1:]) for e in entries if e.strip()]
        assert len(summaries) >= 5
        for summary in summaries:
            assert summary.endswith(".") and "..." not in summary, summary


def test_a_short_option_means_one_thing_across_commands() -> None:
    meanings: dict[str, set[str]] = {}
    for _, command in [("", get_command(app)), *all_commands()]:
        for param in getattr(command, "params", []):
            shorts = [o for o in param.opts if len(o) == 2]
            longs = [o for o in param.opts if o.startswith("--")]
            for short in shorts:
                meanings.setdefault(short, set()).update(longs[:1])
    # -n is "how many" (watch --limit N, server logs --lines N), as head and tail use it.
    assert meanings.pop("-n") == {"--limit", "--lines"}
    assert {k: v for k, v in meanings.items() if len(v) > 1} == {}
    assert meanings["-f"] == {"--file"} and meanings["-q"] == {"--quiet"}


def test_uri_comes_from_evstream_uri_then_mongodb_uri(cli: Any) -> None:
    from typer.testing import CliRunner

    dead = "mongodb://127.0.0.1:9/?directConnection=true"
    env = {"EVSTREAM_DB": cli.db, "EVSTREAM_URI": None, "MONGODB_URI": cli.uri}
    r = CliRunner().invoke(app, ["status", "-o", "json"], env=env)
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(app, ["status", "-o", "json"], env={**env, "MONGODB_URI": dead})
    assert r.exit_code == 3 and "127.0.0.1:9" in r.stderr
    r = CliRunner().invoke(
        app, ["status", "-o", "json"], env={**env, "EVSTREAM_URI": cli.uri, "MONGODB_URI": dead}
    )
    assert r.exit_code == 0, r.stderr
