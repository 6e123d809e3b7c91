"""Documents evstream did not write, in a log other applications share: publish, seed, check
and status with each shape, and with a mix in one log (docs/data-model.md)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pymongo
import pytest
from bson import ObjectId

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

# Each shape an application may leave in `events`, named as event_problem names it.
SHAPES: dict[str, dict[str, Any]] = {
    "no stream": {"type": "login", "data": {"u": 1}, "__v": 0},  # mongoose Event.create
    "stream null": {"stream": None, "version": 1, "type": "t", "ts": T0},
    "stream a number": {"stream": 42, "version": 1, "type": "t", "ts": T0},
    "stream an ObjectId": {"stream": ObjectId(), "version": 1, "type": "t", "ts": T0},
    "no version": {"stream": "no-version", "type": "t", "ts": T0},
    "no ts": {"stream": "no-ts", "version": 1, "type": "t"},
    "ts a string": {"stream": "ts-string", "version": 1, "type": "t", "ts": "2026-01-01T00:00Z"},
    "no type": {"stream": "no-type", "version": 1, "ts": T0},
    "unrelated": {"x": 1},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_publish_beside_each_shape(cli: Any, db: Any, shape: str) -> None:
    db.events.insert_one(dict(SHAPES[shape]))
    r = cli("publish", "login", "-s", "alice", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 1
    stream = SHAPES[shape].get("stream")
    stream = stream if isinstance(stream, str) else "shape"
    r = cli("publish", "login", "-s", stream, "-o", "json")
    assert r.exit_code == 0, r.stderr
    # A document of the stream without a version never becomes its head; one with a version
    # holds it (the unique index would refuse it twice), whatever else it lacks.
    holds = stream != "shape" and "version" in SHAPES[shape]
    assert json.loads(r.stdout)["version"] == (2 if holds else 1)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_check_reports_each_shape(cli: Any, db: Any, shape: str) -> None:
    assert cli("publish", "login", "-s", "alice").exit_code == 0
    inserted = db.events.insert_one(dict(SHAPES[shape])).inserted_id
    r = cli("check", "-o", "json")
    assert r.exit_code == 7
    [finding] = [f for f in json.loads(r.stdout)["findings"] if f["kind"] == "not an event"]
    assert finding["count"] == 1
    assert finding["samples"] == [
        {"$oid": str(inserted)} if isinstance(inserted, ObjectId) else inserted
    ]


@pytest.mark.parametrize(
    "version", ["one", {"n": 1}, [3], 2.5, True, ObjectId()], ids=lambda v: type(v).__name__
)
def test_publish_refuses_a_head_that_is_not_a_version(cli: Any, db: Any, version: Any) -> None:
    assert cli("publish", "t", "-s", "other").exit_code == 0  # evstream's indexes
    db.events.insert_one({"_id": "theirs", "stream": "zed", "version": version, "type": "t"})
    r = cli("publish", "t", "-s", "zed")
    assert r.exit_code == 2
    errors = [line for line in r.stderr.splitlines() if not line.startswith("using ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), r.stderr  # no traceback
    assert "stream 'zed'" in r.stderr and "_id 'theirs'" in r.stderr
    assert "nothing was written" in r.stderr
    assert db.events.count_documents({"stream": "zed"}) == 1


@pytest.mark.parametrize("version", ["one", {"n": 1}], ids=["str", "object"])
def test_a_file_refuses_it_too_with_an_exact_account(cli: Any, db: Any, version: Any) -> None:
    db.events.insert_one({"_id": "theirs", "stream": "zed", "version": version, "type": "t"})
    lines = "".join(json.dumps({"type": "t", "stream": f"s{i}"}) + "\n" for i in range(5))
    lines += json.dumps({"type": "t", "stream": "zed"}) + "\n"
    r = cli("publish", "--file", "-", "--batch-size", "5", input=lines)
    assert r.exit_code == 2
    assert "_id 'theirs'" in r.stderr and "5 event(s) before it were stored" in r.stderr
    assert db.events.count_documents({"stream": {"$regex": "^s"}}) == 5


def test_a_mixed_log(cli: Any, db: Any) -> None:
    """Every shape at once, beside evstream's own events: publish, seed and check agree."""
    assert cli("seed").exit_code == 0
    db.events.insert_many([dict(doc) for doc in SHAPES.values()])
    assert cli("publish", "login", "-s", "alice").exit_code == 0
    assert cli("seed").exit_code == 0  # seeding again stores nothing twice
    r = cli("check", "-o", "json")
    report = json.loads(r.stdout)
    assert r.exit_code == 7
    foreign = [f for f in report["findings"] if f["kind"] == "not an event"]
    assert sum(f["count"] for f in foreign) == len(SHAPES)
    assert [f for f in report["findings"] if f["kind"] != "not an event"] == []
    assert report["events"] == 5 and report["documents"] == 5 + len(SHAPES)


# --- the unique {stream, version} index ---------------------------------------------------------


@pytest.fixture
def app_index(db: Any) -> str:
    """A non-unique {stream, version} index, as mongoose's schema.index({stream: 1, version: 1})
    creates it before evstream ever runs; its name as the server lists it."""
    db.events.create_index([("stream", 1), ("version", 1)], name="stream_1_version_1")
    [index] = [ix for ix in db.events.list_indexes() if ix["name"] != "_id_"]
    return str(index["name"])


@pytest.mark.parametrize(
    "args",
    [("publish", "t", "-s", "a"), ("publish", "--file", "-"), ("seed",)],
    ids=["publish", "publish --file", "seed"],
)
def test_publish_and_seed_refuse_a_non_unique_index(
    cli: Any, db: Any, app_index: str, args: tuple[str, ...]
) -> None:
    r = cli(*args, input=json.dumps({"type": "t", "stream": "a"}) + "\n")
    assert r.exit_code == 4
    assert f"non-unique index '{app_index}'" in r.stderr
    assert f'db.events.dropIndex("{app_index}")' in r.stderr
    assert db.events.count_documents({}) == 0
    assert not any(ix.get("unique") for ix in db.events.list_indexes())


def test_after_the_fix_publish_creates_the_unique_index(cli: Any, db: Any, app_index: str) -> None:
    assert cli("publish", "t", "-s", "a").exit_code == 4
    db.events.drop_index(app_index)  # the fix the error names
    assert cli("publish", "t", "-s", "a").exit_code == 0
    assert any(ix.get("unique") for ix in db.events.list_indexes())
    assert cli("check").exit_code == 0


def test_indexes_are_checked_once_per_process_not_per_batch(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = pymongo.collection.Collection.list_indexes

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(self.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pymongo.collection.Collection, "list_indexes", counted)

    def publish(events: int) -> int:
        calls.clear()
        lines = "".join(
            json.dumps({"type": "t", "stream": f"s{i % 7}"}) + "\n" for i in range(events)
        )
        assert cli("publish", "--file", "-", "--batch-size", "100", input=lines).exit_code == 0
        return calls.count("events")

    one_batch, ten_batches = publish(100), publish(1000)
    assert one_batch == ten_batches and 1 <= ten_batches <= 2


# --- status ---------------------------------------------------------------------------------------


def test_status_skips_foreign_documents(cli: Any, db: Any) -> None:
    assert cli("publish", "login", "-s", "alice").exit_code == 0
    db.events.insert_many([dict(doc) for doc in SHAPES.values()])
    r = cli("status", "-o", "json")
    assert r.exit_code == 0
    status = json.loads(r.stdout)
    assert [row["type"] for row in status["types"]] == ["login"]
    assert status["oldest"]["stream"] == "alice" and status["newest"]["stream"] == "alice"
    assert status["counts"]["events"] == 1 and status["counts"]["streams"] == 1
    assert status["not_events"]["total"] == len(SHAPES)
    # Said once, in status's own output (JSON not_events, the view's "Not events" row), not
    # again on stderr on every run.
    assert "skipped" not in r.stderr and "not events" not in r.stderr, r.stderr
    pretty = cli("status", "-o", "pretty", COLUMNS="120")
    assert "Not events" in pretty.stdout and "skipped" not in pretty.stderr, pretty.stderr
    assert sum(status["activity"]["counts"]) == 1


def test_status_does_not_crash_on_foreign_documents(cli: Any, db: Any) -> None:
    assert cli("publish", "login", "-s", "alice").exit_code == 0
    db.events.insert_many([dict(doc) for doc in SHAPES.values()])
    assert cli("status", "-o", "json").exit_code == 0
    assert cli("status", "-o", "pretty").exit_code == 0


# --- rebuilds: full and incremental skip the same documents (issue 24, finding 4) ---------------


@pytest.mark.parametrize("partition", [None, "2/3"])
def test_full_and_incremental_rebuilds_count_the_same_skipped_documents(
    cli: Any, db: Any, partition: str | None
) -> None:
    assert cli("seed", "--users", "5", "--events-per-user", "3").exit_code == 0
    # Each shape before the first run (documents without a ts never enter an incremental
    # window, and those with an old one fall before it), and the dated ones again after it
    # (in the window). (Undated ones added later would make the next run a full one on
    # nx-27017, whose `count` counts one of them as before the checkpoint.)
    # (Not "ts a string": nx-27017's count takes it for a date before the checkpoint, which
    # `find` does not, so the next run is a full one there.)
    shapes = [dict(doc) for shape, doc in SHAPES.items() if shape != "ts a string"]
    db.events.insert_many(shapes)
    extra = ["--partition", partition] if partition else []
    first = cli("rebuild-sessions", *extra, "-o", "json")
    assert first.exit_code == 0, first.stderr
    now = datetime.now(timezone.utc)
    later = []
    for doc in shapes:
        if doc.get("ts") == T0:  # a date before the checkpoint would make it a full run
            later.append({**doc, "_id": f"later-{len(later)}", "ts": now})
            if "version" in doc:
                later[-1]["version"] = doc["version"] + 1
    db.events.insert_many(later)
    assert cli("publish", "login", "-s", "user-000001").exit_code == 0

    def skipped(*args: str) -> dict[str, Any]:
        r = cli("rebuild-sessions", "--dry-run", *extra, *args, "-o", "json")
        assert r.exit_code == 0, r.stderr
        summary = json.loads(r.stdout)
        assert summary["mode"] == ("incremental" if args else "full"), summary.get("full_because")
        assert "skipped" in r.stderr  # and said on stderr, once
        return dict(summary["skipped"])

    full, incremental = skipped(), skipped("--incremental")
    assert incremental == full
    assert full["total"] == len(shapes) + len(later)
    assert full["kinds"]["no ts"] == 1 and full["kinds"]["no stream"] == 3 + 1


def test_a_projection_of_some_types_skips_the_same_documents_both_ways(cli: Any, db: Any) -> None:
    from pathlib import Path

    carts = str(Path(__file__).parent / "projections" / "carts.py")
    assert cli("publish", "cart.created", "-s", "cart1").exit_code == 0
    db.events.insert_many(
        [
            {"type": "cart.created", "stream": "no-ts", "version": 1},
            {"type": "cart.created", "ts": T0},  # no stream
            {"type": "cart.created", "stream": "v", "version": "1", "ts": T0},
            {"type": "other", "stream": "x"},  # not of its types: not read at all
        ]
    )
    assert cli("rebuild", "carts", "--module", carts).exit_code == 0

    def skipped(*args: str) -> dict[str, Any]:
        r = cli("rebuild", "carts", "--module", carts, "--dry-run", *args, "-o", "json")
        assert r.exit_code == 0, r.stderr
        return dict(json.loads(r.stdout)["skipped"])

    assert skipped("--incremental") == skipped()
    assert skipped()["total"] == 3
