"""publish's input in daily use: --file --check, --data @file and -, the summary's counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evstream.output import progress_figures

SEVEN_LINES = (
    '{"type": "a", "stream": "s"}\n'
    "not json\n"
    "\n"
    '{"type": "", "stream": "s"}\n'
    '{"type": "b", "stream": "s"}\n'
    '{"stream": "s"}\n'
    '{"type": "c"}\n'
)


def test_check_lists_every_bad_line_and_writes_nothing(cli: Any, db: Any, tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text(SEVEN_LINES)
    r = cli("publish", "--file", str(path), "--check", "-o", "pretty")
    assert r.exit_code == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert [e.split(":")[1].strip() for e in errors] == ["line 2", "line 4", "line 6", "line 7"]
    assert "Checked, nothing written: 7 lines · 2 events · 4 bad lines" in r.stdout
    assert db.events.count_documents({}) == 0
    assert "events" not in db.list_collection_names() or db.events.count_documents({}) == 0


def test_check_of_a_good_file_exits_0_and_writes_nothing(cli: Any, db: Any, tmp_path: Path) -> None:
    path = tmp_path / "good.ndjson"
    path.write_text("".join(json.dumps({"type": "t", "stream": f"s{i}"}) + "\n" for i in range(5)))
    r = cli("publish", "--file", str(path), "--check", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == {"lines": 5, "events": 5, "bad": 0, "written": 0, "listed": 0}
    assert db.events.count_documents({}) == 0


def test_check_lists_up_to_a_limit_then_counts(cli: Any, db: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_text("nope\n" * 45)
    r = cli("publish", "--file", str(path), "--check", "-o", "pretty")
    assert r.exit_code == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 21
    assert errors[-1] == "error: … and 25 more bad lines"
    rows = [json.loads(x) for x in cli("publish", "-f", str(path), "--check").stdout.splitlines()]
    assert len(rows) == 21 and rows[-1]["bad"] == 45 and rows[-1]["listed"] == 20


def test_check_reads_stdin_too(cli: Any, db: Any) -> None:
    r = cli("publish", "--file", "-", "--check", "-o", "json", input=SEVEN_LINES)
    assert r.exit_code == 2
    assert json.loads(r.stdout.splitlines()[-1])["bad"] == 4
    assert db.events.count_documents({}) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["publish", "t", "-s", "s", "--check"], "--check applies to --file only"),
        (["publish", "-f", "-", "--check", "--skip-invalid"], "--check writes nothing"),
    ],
)
def test_check_misused(cli: Any, args: list[str], message: str) -> None:
    r = cli(*args)
    assert r.exit_code == 2 and message in r.stderr


def test_skip_invalid_summary_counts_lines_read(cli: Any, db: Any, tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    path.write_text(SEVEN_LINES)
    r = cli("publish", "--file", str(path), "--skip-invalid", "-o", "json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["published"], report["skipped"], report["read"]) == (2, 4, 7)
    pretty = cli("publish", "--file", str(path), "--skip-invalid", "-o", "pretty")
    assert "Published: 2 events · 0 duplicates · 4 skipped · 7 lines read" in pretty.stdout


def test_the_summary_says_one_event_not_one_events(cli: Any, db: Any, tmp_path: Path) -> None:
    path = tmp_path / "one.ndjson"
    path.write_text('{"type": "t", "stream": "s", "id": "only"}\n')
    assert (
        "Published: 1 event · 0 duplicates"
        in cli("publish", "-f", str(path), "-o", "pretty").stdout
    )
    again = cli("publish", "-f", str(path), "-o", "pretty").stdout
    assert "Published: 0 events · 1 duplicate ·" in again


def test_data_from_a_file_and_from_stdin(cli: Any, db: Any, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"username": "alice", "tags": ["a", "b"]}\n')
    r = cli("publish", "login", "-s", "alice", "--data", f"@{payload}", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["data"] == {"username": "alice", "tags": ["a", "b"]}
    r = cli("publish", "login", "-s", "alice", "-d", "-", "--meta", '{"m": 1}', input='{"n": 2}')
    assert r.exit_code == 0, r.stderr
    stored = db.events.find_one({"version": 2})
    assert stored["data"] == {"n": 2} and stored["meta"] == {"m": 1}
    assert cli("publish", "x", "-s", "s", "--meta", f"@{payload}").exit_code == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("@/no/such/file.json", "--data @/no/such/file.json: no such file"),
        ("@.", "a directory, not a JSON file"),
    ],
)
def test_data_from_a_bad_file(cli: Any, db: Any, value: str, message: str) -> None:
    r = cli("publish", "x", "-s", "s", "--data", value)
    assert r.exit_code == 2 and message in r.stderr
    assert db.events.count_documents({}) == 0


def test_data_from_a_file_that_is_not_an_object(cli: Any, db: Any, tmp_path: Path) -> None:
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2]")
    r = cli("publish", "x", "-s", "s", "--data", f"@{bad}")
    assert r.exit_code == 2 and "--data" in r.stderr
    assert cli("publish", "x", "-s", "s", "-d", "-", "--meta", "-").exit_code == 2


# --- progress ------------------------------------------------------------------------------------


def test_progress_says_what_it_counts_its_rate_and_both_times() -> None:
    text = progress_figures(1200, 1200, 5000, 3.0)
    assert text == "1,200/5,000 events · 400 events/s · elapsed 0:03 · remaining 0:09"
    # A file's bar moves by bytes, but it counts and rates events.
    by_bytes = progress_figures(300, 30_000, 100_000, 2.0, by_bytes=True)
    assert by_bytes == "300 events · 150 events/s · elapsed 0:02 · remaining 0:04"
    assert progress_figures(0, 0, None, 65.0) == "0 events · 0 events/s · elapsed 1:05"
    assert progress_figures(0, 0, 10, 1.0).endswith("remaining …")


def test_the_remaining_time_moves_between_updates() -> None:
    # No new progress for a while: the average rate falls, so the estimate grows.
    first = progress_figures(100, 100, 1000, 1.0)
    later = progress_figures(100, 100, 1000, 2.0)
    assert first.endswith("remaining 0:09") and later.endswith("remaining 0:18")
    assert "elapsed 0:01" in first and "elapsed 0:02" in later
