"""Copies are exact: stored events published again (lines with `version` and `ts`, as
`watch -o json` and mongoexport print them) are stored as they were, secrets kept as stored;
redaction applies to new events only. Out-of-order versions are found while checking."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId, json_util

from evstream.errors import InvalidInput
from evstream.events import InvalidEvent, event_from_object, redact_event
from evstream.output import MASK
from evstream.publishing import VersionOrder, parse_line, validate_all

FIELDS = ("_id", "stream", "version", "type", "data", "meta", "ts")


def stored(db: Any) -> list[dict[str, Any]]:
    return list(db.events.find().sort([("stream", 1), ("version", 1)]))


def watched(cli: Any, db: Any, *extra: str) -> str:
    """What `evstream watch --from start -o json` prints for the whole log."""
    total = db.events.count_documents({})
    r = cli("watch", "--from", "start", "--limit", str(total), "-o", "json", *extra)
    assert r.exit_code == 0, r.stderr
    return r.stdout


@pytest.fixture
def source(cli: Any, db: Any) -> Any:
    """A log with a secret kept on purpose (--keep-secrets), one redacted, and plain events."""
    assert (
        cli(
            "publish", "login", "-s", "alice", "-d", '{"password": "hunter2"}', "--keep-secrets"
        ).exit_code
        == 0
    )
    assert (
        cli(
            "publish", "login", "-s", "bob", "-d", '{"token": "t0k"}', "--meta", '{"src": "x"}'
        ).exit_code
        == 0
    )
    assert cli("publish", "logout", "-s", "alice").exit_code == 0
    return cli


def test_watch_json_copies_exactly_secrets_kept_as_stored(
    source: Any, db: Any, client: Any, server_uri: str
) -> None:
    lines = watched(source, db, "--show-secrets")
    copy_db = f"{source.db}_copy"
    try:
        r = source("publish", "--file", "-", input=lines, EVSTREAM_DB=copy_db)
        assert r.exit_code == 0, r.stderr
        assert "redacted" not in r.stderr
        copied = list(client[copy_db].events.find().sort([("stream", 1), ("version", 1)]))
        assert copied == stored(db)
        assert copied[0]["data"] == {"password": "hunter2"}  # kept, as it was stored
        assert copied[2]["data"] == {"token": "[redacted]"}  # redacted, as it was stored
        # A second copy of the same lines stores nothing twice.
        again = source("publish", "--file", "-", "-o", "json", input=lines, EVSTREAM_DB=copy_db)
        assert json.loads(again.stdout)["duplicates"] == 3
    finally:
        client.drop_database(copy_db)


def test_a_copy_from_a_file_is_exact_too(source: Any, db: Any, client: Any, tmp_path: Path) -> None:
    path = tmp_path / "dump.ndjson"
    path.write_text(
        "".join(json_util.dumps(doc) + "\n" for doc in stored(db))  # as mongoexport writes
    )
    copy_db = f"{source.db}_copy"
    try:
        assert source("publish", "--file", str(path), EVSTREAM_DB=copy_db).exit_code == 0
        assert list(client[copy_db].events.find().sort([("stream", 1), ("version", 1)])) == stored(
            db
        )
    finally:
        client.drop_database(copy_db)


def test_a_masked_copy_is_refused_before_anything_is_written(
    source: Any, db: Any, client: Any, tmp_path: Path
) -> None:
    path = tmp_path / "masked.ndjson"
    path.write_text(watched(source, db))  # without --show-secrets: "****" in place of the secret
    copy_db = f"{source.db}_copy"
    try:
        r = source("publish", "--file", str(path), EVSTREAM_DB=copy_db)
        assert r.exit_code == 2
        assert "line 1: data.password is '****'" in r.stderr
        assert "--show-secrets" in r.stderr and "nothing was written" in r.stderr
        assert client[copy_db].events.count_documents({}) == 0
        # --keep-secrets stores the lines as given, mask included.
        assert (
            source("publish", "--file", str(path), "--keep-secrets", EVSTREAM_DB=copy_db).exit_code
            == 0
        )
        assert client[copy_db].events.find_one({"stream": "alice", "version": 1})["data"] == {
            "password": MASK
        }
    finally:
        client.drop_database(copy_db)


def test_events_another_application_wrote_copy_exactly(cli: Any, db: Any, client: Any) -> None:
    """A mongoose document (ObjectId _id, __v) that is an event keeps its _id and fields."""
    assert cli("publish", "t", "-s", "a").exit_code == 0
    db.events.insert_one(
        {
            "_id": ObjectId(),
            "stream": "m",
            "version": 1,
            "type": "login",
            "data": {"u": 1},
            "ts": datetime(2026, 1, 1, tzinfo=timezone.utc),
            "__v": 0,
            "secret": "s3",
        }
    )
    lines = watched(cli, db, "--show-secrets")
    copy_db = f"{cli.db}_copy"
    try:
        r = cli("publish", "--file", "-", input=lines, EVSTREAM_DB=copy_db)
        assert r.exit_code == 0, r.stderr
        copied = list(client[copy_db].events.find().sort([("stream", 1), ("version", 1)]))
        assert copied == stored(db)
        assert isinstance(copied[1]["_id"], ObjectId) and copied[1]["__v"] == 0
        # Masked by watch, the top-level secret is refused like one in data.
        masked = watched(cli, db)
        client.drop_database(copy_db)
        r = cli("publish", "--file", "-", input=masked, EVSTREAM_DB=copy_db)
        assert r.exit_code == 2 and ": secret is '****'" in r.stderr
    finally:
        client.drop_database(copy_db)


def test_new_events_are_still_redacted(cli: Any, db: Any) -> None:
    line = json.dumps({"type": "t", "stream": "a", "data": {"password": "p"}}) + "\n"
    # A version without ts is an expected version, not a stored event: redacted too.
    line += json.dumps({"type": "t", "stream": "a", "version": 2, "data": {"password": "p"}}) + "\n"
    r = cli("publish", "--file", "-", input=line)
    assert r.exit_code == 0 and "redacted secret-looking fields in 2 event(s)" in r.stderr
    assert [d["data"] for d in stored(db)] == [{"password": "[redacted]"}] * 2


# --- out-of-order versions ------------------------------------------------------------------------


def dump_sorted_by_id(total: int = 20) -> str:
    """Stored events of two streams whose _ids do not follow their versions (a dump sorted by
    _id): stream a's versions come 1..7 and then 9 before 8."""
    docs = []
    for i in range(total):
        stream, version = ("a", i // 2 + 1) if i % 2 == 0 else ("b", i // 2 + 1)
        docs.append(
            {
                "_id": f"e{i:03d}",
                "stream": stream,
                "version": version,
                "type": "t",
                "data": {},
                "ts": {"$date": f"2026-01-01T00:00:{i:02d}Z"},
            }
        )
    docs[14], docs[16] = docs[16], docs[14]  # line 15 holds a@9, line 17 a@8
    return "".join(json.dumps(d) + "\n" for d in docs)


def test_out_of_order_versions_in_a_file_write_nothing(cli: Any, db: Any, tmp_path: Path) -> None:
    path = tmp_path / "by-id.ndjson"
    path.write_text(dump_sorted_by_id())
    r = cli("publish", "--file", str(path))
    assert r.exit_code == 2
    assert "line 15: stream 'a' has version 9 after version 7 (line 13)" in r.stderr
    assert "sort the file by stream and version" in r.stderr
    assert "and 1 more invalid line(s)" in r.stderr  # line 17's a@8, after a@9
    assert "nothing was written" in r.stderr
    assert "expected version" not in r.stderr
    assert db.events.count_documents({}) == 0


def test_out_of_order_from_stdin_stops_at_the_line_with_an_exact_account(cli: Any, db: Any) -> None:
    r = cli("publish", "--file", "-", input=dump_sorted_by_id())
    assert r.exit_code == 2
    assert "line 15: stream 'a' has version 9 after version 7 (line 13)" in r.stderr
    assert "14 event(s) before it were stored" in r.stderr
    assert db.events.count_documents({}) == 14


def test_a_sorted_dump_is_copied(cli: Any, db: Any) -> None:
    rows = [json.loads(line) for line in dump_sorted_by_id().splitlines()]
    rows.sort(key=lambda row: (row["stream"], row["version"]))
    assert (
        cli("publish", "--file", "-", input="".join(json.dumps(r) + "\n" for r in rows)).exit_code
        == 0
    )
    assert [(d["stream"], d["version"]) for d in stored(db)] == [
        (s, v) for s in "ab" for v in range(1, 11)
    ]


def test_a_copy_into_a_stream_that_has_moved_on_names_its_version(cli: Any, db: Any) -> None:
    assert cli("publish", "t", "-s", "a").exit_code == 0
    line = json.dumps(
        {
            "_id": "x",
            "stream": "a",
            "version": 1,
            "type": "t",
            "ts": {"$date": "2026-01-01T00:00:00Z"},
        }
    )
    r = cli("publish", "--file", "-", input=line + "\n")
    assert r.exit_code == 5
    assert (
        "line 1: stream 'a' is at version 1, so the stored event with version 1 cannot keep"
        in r.stderr
    )
    assert "expected version" not in r.stderr


# --- the pure rules ---------------------------------------------------------------------------------


def events_of(*rows: dict[str, Any]) -> list[Any]:
    return [event_from_object(row, line=n) for n, row in enumerate(rows, 1)]


TS = json_util.loads('{"$date": "2026-01-01T00:00:00Z"}')


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        ([{"stream": "a", "version": 1}, {"stream": "a", "version": 2}], None),
        ([{"stream": "a", "version": 1}, {"stream": "a"}, {"stream": "a", "version": 3}], None),
        (
            [{"stream": "a", "version": 2}, {"stream": "a", "version": 1}],
            "line 2: stream 'a' has version 1 after version 2 (line 1)",
        ),
        (
            [{"stream": "a", "version": 2}, {"stream": "a", "version": 2}],
            "has version 2 after version 2",
        ),
        (
            [{"stream": "a", "version": 2, "id": "x"}, {"stream": "a", "version": 2, "id": "x"}],
            None,
        ),
        (
            [{"stream": "a", "version": 1}, {"stream": "a", "version": 4}],
            "versions 2 to 3 belong between them",
        ),
        (
            [{"stream": "a", "version": 1}, {"stream": "a", "version": 3}],
            "version 2 belongs between them",
        ),
        ([{"stream": "a", "version": 5}, {"stream": "b", "version": 1}], None),
        ([{"stream": "a"}, {"stream": "a", "version": 1}], None),  # the head is not known here
    ],
)
def test_version_order(rows: list[dict[str, Any]], error: str | None) -> None:
    order = VersionOrder()
    evs = events_of(*({"type": "t", **row} for row in rows))
    if error is None:
        for ev in evs:
            order.see(ev)
        return
    with pytest.raises(InvalidEvent, match=re.escape(error)):
        for ev in evs:
            order.see(ev)


def test_version_order_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VersionOrder, "MAX_STREAMS", 10)
    order = VersionOrder()
    for ev in events_of(*({"type": "t", "stream": f"s{i}", "version": 1} for i in range(100))):
        order.see(ev)
    assert len(order.last) <= 10


def test_redaction_spares_copies_only() -> None:
    copy, new, versioned = events_of(
        {"type": "t", "stream": "a", "version": 1, "ts": TS, "data": {"password": "p"}},
        {"type": "t", "stream": "a", "data": {"password": "p"}},
        {"type": "t", "stream": "a", "version": 2, "data": {"password": "p"}},
    )
    assert copy.is_copy and not new.is_copy and not versioned.is_copy
    assert redact_event(copy) == [] and copy.data == {"password": "p"}
    assert redact_event(new) == ["data.password"]
    assert redact_event(versioned) == ["data.password"]


def test_parse_line_refuses_a_masked_copy_unless_keeping_secrets() -> None:
    line = json.dumps(
        {
            "type": "t",
            "stream": "a",
            "version": 1,
            "ts": {"$date": "2026-01-01T00:00:00Z"},
            "meta": {"auth": {"token": MASK}},
        }
    ).encode()
    with pytest.raises(InvalidEvent, match=r"^line 3: meta.auth.token is '\*\*\*\*'"):
        parse_line(line, 3)
    assert parse_line(line, 3, keep_secrets=True) is not None
    new = json.dumps({"type": "t", "stream": "a", "data": {"token": MASK}}).encode()
    assert parse_line(new, 1) is not None  # a new event's mask is redacted like any value


def test_validate_all_names_the_first_out_of_order_line() -> None:
    with pytest.raises(InvalidInput, match="^line 15: .*; nothing was written$"):
        validate_all(io.BytesIO(dump_sorted_by_id().encode()))
