"""The pretty watch view (docs/watch-view.md): dates, aligned columns, no `insert` for the log,
--full, what an update changed, and documents of `events` that are not events."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

import pytest
from rich.console import Console

from evstream.output import WatchView

UTC = timezone.utc
NOW = datetime.now(UTC)
OLD = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def render(thing: Any, width: int = 120) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, soft_wrap=True).print(thing)
    return buf.getvalue()


def event(stream: str, version: int, kind: str, ts: datetime = NOW, **data: Any) -> dict[str, Any]:
    return {"_id": f"{stream}-{version}", "stream": stream, "version": version, "type": kind,
            "data": data, "ts": ts}  # fmt: skip


def show(view: WatchView, doc: dict[str, Any], op: str = "insert") -> str:
    return render(view.render(op, "events", {"_id": doc["_id"]}, doc, doc.get("ts"))).rstrip("\n")


def test_todays_events_show_the_time_and_others_the_date() -> None:
    view = WatchView(now=NOW)
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} login", show(view, event("a", 1, "login")))
    local = OLD.astimezone()
    assert show(view, event("a", 2, "login", OLD)).startswith(f"{local:%Y-%m-%d %H:%M:%S}.000 ")
    # Once dates are shown, today's lines carry theirs too, so the columns stay in line.
    assert show(view, event("a", 3, "login")).startswith(f"{NOW.astimezone():%Y-%m-%d} ")


def test_type_and_stream_columns_line_up_across_lines() -> None:
    view = WatchView(now=NOW)
    docs = [
        event("alice", 1, "session.started", name="Alice"),
        event("bob", 12, "login", username="bob"),
        event("carol-the-long", 3, "profile.updated", email="c@example.com"),
        event("d", 4, "logout", reason="user"),
    ]
    lines = [show(view, doc) for doc in docs]
    assert lines[0].index("{") == lines[1].index("{")  # short streams: one column from the start
    # A wider stream widens the column from its line on (lines already printed stay as they are).
    assert lines[2].index("{") == lines[3].index("{") > lines[1].index("{"), lines
    stream_at = {line.index(doc["stream"] + "@") for line, doc in zip(lines, docs, strict=True)}
    assert len(stream_at) == 1, lines


@pytest.mark.parametrize("op", ["update", "replace", "delete"])
def test_the_log_leaves_out_insert_but_says_any_other_operation(op: str) -> None:
    view = WatchView(now=NOW)
    assert " insert " not in show(view, event("a", 1, "login"))
    assert f" {op} " in show(view, event("a", 1, "login"), op=op)


def test_full_shows_the_whole_payload_pretty_printed_under_the_line() -> None:
    long = "x" * 400
    doc = event("alice", 1, "note", text=long, password="hunter2", nested={"k": [1, 2]})
    text = render(WatchView(full=True, width=80, now=NOW).render("insert", "events", {}, doc))
    first, *rest = text.rstrip("\n").split("\n")
    assert first.endswith("note            alice@1") and "…" not in text
    assert f'"text": "{long}"' in text  # whole, however wide the terminal
    assert '"password": "****"' in text and "hunter2" not in text
    assert all(row.startswith("  ") for row in rest)
    assert json.loads("\n".join(rest)) == {
        "text": long,
        "password": "****",
        "nested": {"k": [1, 2]},
    }
    shown = render(WatchView(width=80, now=NOW).render("insert", "events", {}, doc))
    assert shown.count("\n") == 1 and shown.rstrip().endswith("…")  # without --full: one line


def test_an_update_shows_what_changed_when_the_server_says() -> None:
    view = WatchView(now=NOW)
    doc = {"_id": "alice", "status": "active", "login_count": 3, "name": "Alice"}
    changed = render(
        view.render(
            "update",
            "sessions",
            {"_id": "alice"},
            doc,
            NOW,
            update={"updatedFields": {"login_count": 3}, "removedFields": ["email"]},
        )
    )
    assert 'update  sessions alice {set: {login_count: 3}, unset: ["email"]}' in changed
    assert "Alice" not in changed
    # Without an updateDescription (nx-27017 sends none), the whole document.
    whole = render(view.render("update", "sessions", {"_id": "alice"}, doc, NOW))
    assert '{status: "active", login_count: 3, name: "Alice"}' in whole


FOREIGN = [
    ({"_id": "f1", "type": "legacy", "data": {"x": 1}, "__v": 0}, "no stream"),
    ({"_id": "f2", "stream": 42, "version": 1, "type": "t", "ts": NOW}, "stream not a string"),
    ({"_id": "f3", "stream": "s", "type": "t", "ts": NOW}, "no version"),
    ({"_id": "f4", "stream": "s", "version": 1, "type": "t", "ts": "2024-01-01"}, "ts not a date"),
    ({"_id": "f5", "stream": "s", "version": 1, "ts": NOW}, "no type"),
]


@pytest.mark.parametrize(("doc", "problem"), FOREIGN)
def test_a_document_that_is_not_an_event_is_marked_never_shown_as_data(
    doc: dict[str, Any], problem: str
) -> None:
    view = WatchView(now=NOW)
    line = render(view.render("insert", "events", {"_id": doc["_id"]}, doc, NOW))
    assert f"[not an event: {problem}] _id {doc['_id']}" in line
    assert "None" not in line and "?" not in line and "@" not in line
    assert view.summary() == (
        f"1 document in events was not an event ({problem}: 1), shown marked "
        f"[not an event: …]; first _id: {doc['_id']}"
    )


def test_not_events_are_counted_by_kind_with_the_first_ids() -> None:
    view = WatchView(now=NOW)
    for doc, _ in FOREIGN:
        view.render("insert", "events", {"_id": doc["_id"]}, doc, NOW)
    view.render("insert", "events", {}, event("a", 1, "login"))
    summary = view.summary()
    assert summary is not None and summary.startswith("5 documents in events were not events (")
    assert "no stream: 1, stream not a string: 1" in summary
    assert summary.endswith("first _ids: f1, f2, f3")
    assert WatchView().summary() is None


# --- through the CLI, on a terminal ------------------------------------------------------------


def run_in_pty(cli: Any, args: list[str], columns: int = 80) -> tuple[str, str]:
    """evstream with stdout on a pseudo-terminal: (what it printed there, its stderr)."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, **cli.env(), "TERM": "xterm-256color", "COLUMNS": str(columns)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "evstream", *args],
        stdout=slave,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(30) == 0, err
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n"), err


def test_watch_on_a_terminal_full_dates_and_foreign_documents(cli: Any, db: Any) -> None:
    long = "y" * 300
    db.events.insert_one({"_id": "old-1", "stream": "carol", "version": 1, "type": "login",
                          "data": {"username": "carol"}, "ts": OLD})  # fmt: skip
    db.events.insert_one({"_id": "legacy-1", "type": "legacy", "data": {"x": 1}, "__v": 0})
    r = cli("publish", "note", "-s", "alice", "-d", json.dumps({"text": long}), "-o", "json")
    assert r.exit_code == 0, r.stderr
    args = ["watch", "--from", "start", "--idle-timeout", "0.5"]
    printed, err = run_in_pty(cli, [*args, "--full"])
    assert f'"text": "{long}"' in printed.replace("\n", "")  # whole, wrapped by the terminal
    assert "…" not in printed
    assert f"{OLD.astimezone():%Y-%m-%d %H:%M:%S}.000 login           carol@1" in printed
    assert re.search(r"\d{4}-\d\d-\d\d \S+ note            alice@1\n", printed)
    assert "[not an event: no stream] _id legacy-1" in printed
    assert " insert " not in printed and "None" not in printed
    assert "1 document in events was not an event (no stream: 1)" in err
    assert "first _id: legacy-1" in err
    # JSON shows every change as it is, the foreign document too, and counts nothing.
    r = cli(*args, "-o", "json")
    docs = [json.loads(line)["doc"] for line in r.stdout.splitlines()]
    assert {"_id": "legacy-1", "type": "legacy", "data": {"x": 1}, "__v": 0} in docs
    assert len(docs) == 3 and "not an event" not in r.stderr


def test_an_update_reaches_the_view_with_what_it_changed() -> None:
    """The change stream's updateDescription travels with the change (storage → watch → view)."""
    import mongomock

    from evstream.storage import MongoStore
    from evstream.storage.changes import ChangeFeed

    client: Any = mongomock.MongoClient(tz_aware=True)
    store = MongoStore(client, client["v"], "mongodb://mock", False, "mock")
    feed = ChangeFeed.__new__(ChangeFeed)  # no stream to open: only the translation is tested
    feed.store, feed.name = store, "sessions"
    raw = {
        "_id": {"_data": "82"},
        "operationType": "update",
        "documentKey": {"_id": "alice"},
        "fullDocument": {"_id": "alice", "status": "signed_out", "login_count": 3},
        "updateDescription": {"updatedFields": {"status": "signed_out"}, "removedFields": []},
    }
    change = feed._change(raw)
    assert change.update == raw["updateDescription"]
    from evstream.output import WatchView

    line = WatchView(width=120).render(
        "update", "sessions", change.key, change.doc, None, update=change.update
    )
    text = line.plain if hasattr(line, "plain") else str(line)
    assert "signed_out" in text and "login_count" not in text
