"""`evstream archive`, `erase` and `redact` on a log another client wrote with pymongo, under
its own field names with ObjectId ids (docs/adopting.md, docs/lifecycle.md)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import ObjectId
from test_adopting import APP_MAP, T0, VERSIONED_MAP, app_event, env

from evstream.events import REDACTED

AWARE = bson.json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True)


def out_json(result: Any) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, (result.stdout, result.stderr)
    return json.loads(lines[-1])


@pytest.fixture
def app(cli: Any, db: Any) -> Any:
    """The CLI with the app's map (no versions, epoch-ms ts), over a log the app wrote with
    pymongo: alice logs in three times, bob once."""
    db.domain_events.insert_many(
        [
            app_event(stream, "login", {"username": stream}, T0 + timedelta(seconds=i))
            for i, stream in enumerate(["alice", "alice", "bob", "alice"])
        ]
    )

    def run(*args: str, **extra: Any) -> Any:
        return cli(*args, **env(APP_MAP), **extra)

    run.db = db  # type: ignore[attr-defined]
    return run


def history_event(stream: str, seq: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A document of the versioned app's shape: stream inside meta, versions in `seq`."""
    return {
        "_id": ObjectId(),
        "meta": {"entity": stream, "origin": "billing"},
        "seq": seq,
        "kind": kind,
        "body": data,
        "at": T0 + timedelta(minutes=seq),
        "__v": 0,
    }


def history(db: Any) -> dict[Any, dict[str, Any]]:
    return {d["_id"]: d for d in db.history.find()}


def test_archive_on_a_mapped_log_keeps_its_shape_and_restores_exactly(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    db.history.insert_many(
        [
            history_event(stream, seq, "login", {"username": stream})
            for stream in ("alice", "bob")
            for seq in range(1, 7)
        ]
    )
    original = history(db)
    run = env(VERSIONED_MAP)
    assert cli("rebuild", "sessions", **run).exit_code == 0
    sessions = {d["_id"]: d for d in db.sessions.find()}
    target = tmp_path / "old.ndjson.gz"
    # Versions 1-3 of each stream are before T0 + 3m30s.
    before = (T0 + timedelta(minutes=3, seconds=30)).isoformat()
    preview = cli(
        "archive", "--before", before, "--to", str(target), "--dry-run", "-o", "json", **run
    )
    assert preview.exit_code == 0, preview.stderr
    assert out_json(preview)["events"] == 6 and out_json(preview)["streams"] == 2

    result = cli("archive", "--before", before, "--to", str(target), "-o", "json", **run)
    assert result.exit_code == 0, result.stderr
    assert out_json(result)["deleted"] == 6
    import gzip

    with gzip.open(target, "rt") as handle:
        moved = [bson.json_util.loads(line, json_options=AWARE) for line in handle if line.strip()]
    # The file holds the documents as the app stored them: its names, its ObjectIds.
    assert all(isinstance(d["_id"], ObjectId) and original[d["_id"]] == d for d in moved)
    assert sorted(d["seq"] for d in moved) == [1, 1, 2, 2, 3, 3]
    assert sorted(d["seq"] for d in db.history.find()) == [4, 4, 5, 5, 6, 6]

    assert cli("rebuild", "sessions", **run).exit_code == 0
    assert {d["_id"]: d for d in db.sessions.find()} == sessions  # the rebuild is unchanged
    assert cli("check", **run).exit_code == 0  # archived versions are not gaps

    restored = cli("publish", "--file", str(target), "-o", "json", **run)
    assert restored.exit_code == 0, restored.stderr
    assert history(db) == original


def test_archive_refuses_a_log_without_versions(app: Any, tmp_path: Path) -> None:
    stored = list(app.db.domain_events.find())
    target = tmp_path / "old.ndjson"
    for extra in ((), ("--dry-run",)):
        r = app(
            "archive",
            "--before",
            (T0 + timedelta(seconds=2)).isoformat(),
            "--to",
            str(target),
            *extra,
        )
        assert r.exit_code == 4, (r.stdout, r.stderr)
        assert "version" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "Traceback" not in r.stderr
    assert not target.exists()
    assert list(app.db.domain_events.find()) == stored
    assert "evstream_archives" not in app.db.list_collection_names()


def test_erase_on_a_mapped_log_removes_the_stream_everywhere(app: Any) -> None:
    assert app("rebuild", "sessions").exit_code == 0
    assert app.db.sessions.find_one({"_id": "alice"}) is not None
    r = app("erase", "alice", "--yes", "-o", "json")
    assert r.exit_code == 0, r.stderr
    removed = out_json(r)["streams"][0]["removed"]
    assert removed.get("domain_events") == 3
    assert app.db.domain_events.count_documents({"aggregateId": "alice"}) == 0
    assert app.db.domain_events.count_documents({"aggregateId": "bob"}) == 1
    assert app.db.sessions.find_one({"_id": "alice"}) is None
    for name in app.db.list_collection_names():
        for doc in app.db[name].find():
            assert "alice" not in bson.json_util.dumps(doc), (name, doc)
    r = app("publish", "login", "-s", "alice")
    assert r.exit_code == 5 and "erase" in r.stderr
    assert app.db.domain_events.count_documents({"aggregateId": "alice"}) == 0


def test_redact_on_a_mapped_log_works_on_its_data_and_meta_paths(app: Any) -> None:
    secret = app_event("carol", "signup", {"name": "Carol", "password": "hunter2"}, T0)
    secret["metadata"] = {"source": "login-app", "api_key": "k-123"}
    app.db.domain_events.insert_one(secret)
    before = {d["_id"]: bson.encode(d) for d in app.db.domain_events.find()}
    r = app("redact", "-o", "json")
    assert r.exit_code == 0, r.stderr
    report = out_json(r)
    assert report["changed"] == 1 and report["fields"] == 2
    assert set(report["paths"]) == {"data.password", "meta.api_key"}
    stored = app.db.domain_events.find_one({"_id": secret["_id"]})
    assert stored["payload"] == {"name": "Carol", "password": REDACTED}
    assert stored["metadata"] == {"source": "login-app", "api_key": REDACTED}
    expected = {
        **secret,
        "payload": stored["payload"],
        "metadata": stored["metadata"],
    }
    assert bson.encode(stored) == bson.encode(expected)  # every other field as it was
    for ident, raw in before.items():
        if ident != secret["_id"]:
            assert bson.encode(app.db.domain_events.find_one({"_id": ident})) == raw
    again = app("redact", "-o", "json")
    assert out_json(again)["changed"] == 0  # idempotent


def test_keyed_snapshots_and_erase_on_a_mapped_log(cli: Any, db: Any, tmp_path: Path) -> None:
    """daily_logins (key ts:day) over the app's own shape: the archive keeps the day's state at
    its edge (the app's ObjectIds matched), and erase drops that state with alice in it."""
    daily = str(Path(__file__).parent / "projections" / "daily.py")
    db.history.insert_many(
        [
            history_event(stream, seq, "login", {"username": stream})
            for stream in ("alice", "bob")
            for seq in range(1, 7)
        ]
    )
    run = env(VERSIONED_MAP)
    assert cli("rebuild", "daily_logins", "-m", daily, **run).exit_code == 0
    days = list(db.daily_logins.find())
    assert len(days) == 1 and days[0]["logins"] == 12
    before = (T0 + timedelta(minutes=3, seconds=30)).isoformat()
    target = tmp_path / "old.ndjson"
    result = cli("archive", "--before", before, "--to", str(target), "-m", daily, **run)
    assert result.exit_code == 0, result.stderr
    assert cli("rebuild", "daily_logins", "-m", daily, **run).exit_code == 0
    assert list(db.daily_logins.find()) == days

    r = cli("erase", "alice", "--yes", "-m", daily, "-o", "json", **run)
    assert r.exit_code == 0, r.stderr
    assert out_json(r)["streams"][0]["keyed_snapshots_dropped"] == {"daily_logins": 1}
    (day,) = db.daily_logins.find()
    assert day["users"] == ["bob"] and day["logins"] == 3  # bob's logins left in the log
    for name in db.list_collection_names():
        for doc in db[name].find():
            assert "alice" not in bson.json_util.dumps(doc), (name, doc)
