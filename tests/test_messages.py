"""Messages that must agree with each other and with what the commands do (issue 24,
finding 11)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from evstream.cli import app
from evstream.output import follow_summary_text


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["publish", "-s"], "evstream publish"),
        (["publish", "login", "--data"], "evstream publish"),
        (["server", "start", "--tcp=x"], "evstream server start"),
        (["watch", "--limit", "x"], "evstream watch"),
        (["--db"], "evstream"),
        (["nope"], "evstream"),
    ],
)
def test_a_usage_error_points_to_the_subcommands_help(args: list[str], command: str) -> None:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2
    assert r.stderr.strip().endswith(f"(see '{command} --help')"), r.stderr


def test_check_says_what_watch_does_with_documents_that_are_not_events(
    cli: Any, db: Any
) -> None:
    db.events.insert_one({"_id": "x", "type": "t"})
    report = json.loads(cli("check", "-o", "json").stdout)
    [finding] = [f for f in report["findings"] if f["kind"] == "not an event"]
    assert "watch shows them as [not an event" in finding["problem"]
    assert "watch's pretty view skip" not in finding["problem"]
    shown = cli("watch", "--from", "start", "--no-follow", "-o", "pretty", COLUMNS="120")
    assert "[not an event" in shown.stdout  # as check says


def test_one_event_is_one_event() -> None:
    summary = {
        "projection": "carts",
        "collection": "carts",
        "caught_up": {"mode": "full", "applied": 1},
        "live": {"events": 1, "applied": 1, "written": 1, "skipped": {"total": 0}},
    }
    text = follow_summary_text(summary).plain
    assert "1 live event ·" in text and "1 live events" not in text, text


def test_a_follower_says_one_event_applied(cli: Any, db: Any) -> None:
    assert cli("publish", "login", "--stream", "alice").exit_code == 0
    r = cli("rebuild-sessions", "--follow", "--idle-timeout", "0.5")
    assert r.exit_code == 0, r.stderr
    assert "caught up (full, 1 event applied)" in r.stderr, r.stderr
    assert "1 events" not in r.stderr + r.stdout
