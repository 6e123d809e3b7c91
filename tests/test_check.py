"""`evstream check`: each problem found (and nothing on a healthy log), exit 7, never a write.

The log is written directly with pymongo, as other applications write it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from io import StringIO
from typing import Any

import pytest
from bson import ObjectId
from rich.console import Console

from evstream.check import (
    KIND_FILTERS,
    LogScan,
    checkpoint_problem,
    index_problems,
    projection_problem,
    rebuild_command,
)
from evstream.events import PROBLEM_KINDS
from evstream.output import check_view

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def event(stream: str, version: int, *, _id: Any = None, ts: datetime | None = None) -> dict:
    return {
        "_id": _id or f"{stream}-{version}",
        "stream": stream,
        "version": version,
        "type": "t",
        "data": {},
        "ts": ts or T0 + timedelta(seconds=version),
    }


def run_check(cli: Any) -> tuple[int, dict[str, Any], str]:
    r = cli("check", "-o", "json")
    return r.exit_code, json.loads(r.stdout), r.stderr


def findings(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["kind"] == kind]


# --- through the CLI, against the test server ----------------------------------------------------


def test_a_healthy_log_has_no_findings_and_exits_0(cli: Any) -> None:
    lines = "".join(
        json.dumps({"type": "t", "stream": f"s{i % 3}", "data": {"n": i}}) + "\n" for i in range(30)
    )
    assert cli("publish", "--file", "-", input=lines).exit_code == 0
    code, report, _ = run_check(cli)
    assert code == 0, report
    assert report["healthy"] is True and report["findings"] == []
    assert (report["documents"], report["events"], report["streams"]) == (30, 30, 3)


def test_a_database_without_a_log_is_healthy(cli: Any) -> None:
    code, report, _ = run_check(cli)
    assert code == 0
    assert report["log_exists"] is False and report["documents"] == 0


def test_each_kind_of_foreign_document_is_counted_with_sample_ids(cli: Any, db: Any) -> None:
    cli("publish", "t", "-s", "ok")  # evstream's indexes, and one good event
    oid = ObjectId()
    db.events.insert_many(
        [
            {"_id": oid, "type": "login", "data": {}, "__v": 0},  # mongoose Event.create
            {"_id": "x1", "x": 1},
            {"_id": "n1", "stream": None, "version": 1, "type": "t", "ts": T0},
            {"_id": "i1", "stream": 42, "version": 1, "type": "t", "ts": T0},
            {"_id": "o1", "stream": ObjectId(), "version": 1, "type": "t", "ts": T0},
            {"_id": "v0", "stream": "zed", "type": "t", "ts": T0},
            {"_id": "v1", "stream": "zed", "version": "one", "type": "t", "ts": T0},
            {"_id": "t0", "stream": "tt", "version": 1, "ts": T0},
            {"_id": "d0", "stream": "dd", "version": 1, "type": "t"},
            {"_id": "d1", "stream": "dd2", "version": 1, "type": "t", "ts": "2026-01-01T00:00:00Z"},
        ]
    )
    code, report, _ = run_check(cli)
    assert code == 7
    by_problem = {f["problem"].split(":")[0]: f for f in findings(report, "not an event")}
    # Documents that sort together (no stream at all) come in no defined order: compare sets.
    assert {k: (f["count"], sorted(map(str, f["samples"]))) for k, f in by_problem.items()} == {
        "3 documents with no stream": (3, sorted(["{'$oid': '" + str(oid) + "'}", "x1", "n1"])),
        "2 documents with stream not a string": (2, ["i1", "o1"]),
        "1 document with no version": (1, ["v0"]),
        "1 document with version not a positive integer": (1, ["v1"]),
        "1 document with no type": (1, ["t0"]),
        "1 document with no ts": (1, ["d0"]),
        "1 document with ts not a date": (1, ["d1"]),
    }
    assert all("db.events.find(" in f["fix"] for f in by_problem.values())
    assert (
        'db.events.find({_id: {$in: ["i1", "o1"]}})'
        in by_problem["2 documents with stream not a string"]["fix"]
    )
    assert f'ObjectId("{oid}")' in by_problem["3 documents with no stream"]["fix"]
    assert (report["documents"], report["events"]) == (11, 1)


def test_gaps_duplicates_and_ts_backwards_per_stream(cli: Any, db: Any) -> None:
    # No unique index (an application's log): duplicates can exist.
    db.events.insert_many(
        [
            event("a", 1),
            event("a", 2),
            event("a", 2, _id="a-2-again"),
            event("a", 3),
            event("b", 2),  # starts at 2: version 1 missing
            event("b", 5),  # 3 and 4 missing
            event("c", 1, ts=T0 + timedelta(hours=1)),
            event("c", 2, ts=T0),  # before version 1
        ]
    )
    code, report, _ = run_check(cli)
    assert code == 7
    [dup] = findings(report, "duplicate version")
    assert dup["count"] == 1
    assert dup["samples"] == [{"stream": "a", "version": 2, "ids": ["a-2", "a-2-again"]}]
    assert 'db.events.deleteOne({_id: "a-2-again"})' in dup["fix"]
    assert "unique: true" in dup["fix"]
    [gap] = findings(report, "version gap")
    assert gap["count"] == 3 and "1 stream misses 3 versions" in gap["problem"]
    assert gap["samples"] == [
        {"stream": "b", "after": 0, "next": 2},
        {"stream": "b", "after": 2, "next": 5},
    ]
    [back] = findings(report, "ts backwards")
    assert back["count"] == 1 and back["samples"][0]["_id"] == "c-2"
    assert "--margin" in back["fix"]
    # The same version twice is one duplicate, not a gap or a ts problem.
    assert report["events"] == 8 and report["streams"] == 3


def test_a_non_unique_stream_version_index_is_reported_with_its_fix(cli: Any, db: Any) -> None:
    db.events.create_index([("stream", 1), ("version", 1)])  # as mongoose's schema.index does
    db.events.create_index([("ts", 1)])
    db.events.insert_many([event("a", 1), event("a", 2)])
    code, report, _ = run_check(cli)
    assert code == 7
    [index] = findings(report, "index")
    name = index["samples"][0]
    assert f"'{name}'" in index["problem"] and "not unique" in index["problem"]
    assert f'db.events.dropIndex("{name}")' in index["fix"]
    assert "createIndex({stream: 1, version: 1}" in index["fix"] and "unique: true" in index["fix"]


def test_missing_indexes_are_reported(cli: Any, db: Any) -> None:
    db.events.insert_one(event("a", 1))
    code, report, _ = run_check(cli)
    assert code == 7
    problems = sorted(f["problem"].split(":")[0] for f in findings(report, "index"))
    assert problems == ["the index stream_1_version_1 is missing", "the index ts_1 is missing"]


def test_damaged_own_collections(cli: Any, db: Any) -> None:
    assert cli("publish", "t", "-s", "a").exit_code == 0
    db.evstream_checkpoints.insert_many(
        [
            {"_id": "mailer"},  # no fields at all
            {
                "_id": "fine",
                "collection": "events",
                "filters": {},
                "updated_at": T0,
                "position": {"ts": T0, "id": "x"},
                "settled": None,
                "origin": None,
            },
        ]
    )
    db.evstream_projections.insert_one({"_id": "sessions", "mode": "full"})
    code, report, _ = run_check(cli)
    assert code == 7
    [cp] = findings(report, "checkpoint")
    assert cp["samples"] == ["mailer"] and cp["count"] == 1
    assert "--checkpoint mailer --reset-checkpoint" in cp["fix"]
    assert 'db.evstream_checkpoints.deleteOne({_id: "mailer"})' in cp["fix"]
    [pj] = findings(report, "projection checkpoint")
    assert pj["samples"] == ["sessions"] and "evstream rebuild-sessions" in pj["fix"]


def test_real_checkpoints_and_projections_are_healthy(cli: Any) -> None:
    assert cli("seed").exit_code == 0
    assert cli("rebuild-sessions").exit_code == 0
    r = cli("watch", "--from", "start", "--checkpoint", "c1", "--limit", "4", "-o", "json")
    assert r.exit_code == 0, r.stderr
    code, report, _ = run_check(cli)
    assert code == 0, report["findings"]


def test_check_never_writes(cli: Any, db: Any) -> None:
    db.events.insert_many([{"_id": "x", "x": 1}, event("a", 1), event("a", 3)])
    before = {name: list(db[name].find()) for name in db.list_collection_names()}
    indexes = list(db.events.list_indexes())
    assert run_check(cli)[0] == 7
    assert {name: list(db[name].find()) for name in db.list_collection_names()} == before
    assert list(db.events.list_indexes()) == indexes


def test_pretty_output_lists_findings_and_fixes(cli: Any, db: Any) -> None:
    db.events.insert_many([{"_id": "x", "x": 1}, event("a", 1)])
    r = cli("check", "-o", "pretty")
    assert r.exit_code == 7
    assert "not an event" in r.stdout and "How to fix them" in r.stdout
    assert "db.events.find({stream: null})" in r.stdout


# --- the pure parts -------------------------------------------------------------------------------


def scan(docs: list[dict[str, Any]]) -> LogScan:
    result = LogScan()
    for doc in sorted(docs, key=lambda d: (d["stream"], d["version"])):
        result.add(doc)
    return result


def test_every_kind_has_its_mongosh_filter() -> None:
    assert set(KIND_FILTERS) == set(PROBLEM_KINDS)


@pytest.mark.parametrize(
    ("versions", "missing", "duplicates"),
    [
        ([1, 2, 3], 0, 0),
        ([2, 3], 1, 0),
        ([1, 4], 2, 0),
        ([1, 1, 1, 2], 0, 2),
        ([1, 2, 2, 5], 2, 1),
        ([7], 6, 0),
    ],
)
def test_the_scan_counts_gaps_and_duplicates(
    versions: list[int], missing: int, duplicates: int
) -> None:
    docs = [event("s", v, _id=f"e{i}") for i, v in enumerate(versions)]
    result = scan(docs)
    assert (result.missing, result.duplicates, result.backwards) == (missing, duplicates, 0)
    assert bool(result.findings()) == bool(missing or duplicates)


def test_the_scan_compares_ts_within_a_stream_only() -> None:
    docs = [
        event("a", 1, ts=T0 + timedelta(days=1)),
        event("b", 1, ts=T0),  # earlier than a's, but another stream
        event("b", 2, ts=T0 - timedelta(seconds=3)),  # past the 2 s allowed
        {**event("c", 1), "ts": datetime(2026, 1, 1)},  # a naive date compares as UTC
        event("c", 2, ts=T0 + timedelta(seconds=2)),
    ]
    result = scan(docs)
    assert result.backwards == 1 and result.back[0]["_id"] == "b-2"


def test_samples_stay_bounded() -> None:
    result = LogScan(samples=3)
    for i in range(100):
        result.add({"_id": i, "x": 1})
        result.add(event(f"s{i:03d}", 2))
    [foreign, gaps] = result.findings()
    assert foreign.count == 100 and foreign.samples == [0, 1, 2]
    assert gaps.count == 100 and len(gaps.samples) == 3


def test_index_problems_partial_unique_index() -> None:
    rows = [
        {"name": "_id_", "key": {"_id": 1}},
        {
            "name": "sv",
            "key": {"stream": 1, "version": 1},
            "unique": True,
            "partialFilterExpression": {"type": "x"},
        },
        {"name": "ts_1", "key": {"ts": 1}},
    ]
    [finding] = index_problems(rows, [])
    assert "partial" in finding.problem and 'dropIndex("sv")' in finding.fix
    assert index_problems([{**rows[1], "partialFilterExpression": None}, rows[2]], []) == []


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"_id": "a"}, "no collection"),
        ({"_id": "a", "collection": "events"}, "no updated_at date"),
        (
            {"_id": "a", "collection": "events", "updated_at": T0, "position": {"ts": "x"}},
            "position without a ts date",
        ),
        ({"_id": "a", "collection": "events", "updated_at": T0, "position": None}, None),
        ({"_id": "a", "collection": "sessions", "updated_at": T0}, "no resume token"),
        ({"_id": "a", "collection": "sessions", "updated_at": T0, "token": None}, None),
    ],
)
def test_checkpoint_problem(doc: dict[str, Any], problem: str | None) -> None:
    assert checkpoint_problem(doc) == problem


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"_id": "sessions"}, "no last_run_at date"),
        ({"_id": "sessions", "last_run_at": T0, "since": T0, "covered": "3"}, "no covered count"),
        ({"_id": "sessions", "last_run_at": T0, "since": T0, "covered": 3}, None),
    ],
)
def test_projection_problem(doc: dict[str, Any], problem: str | None) -> None:
    assert projection_problem(doc) == problem


@pytest.mark.parametrize(
    ("doc", "command"),
    [
        ({"_id": "sessions"}, "evstream rebuild-sessions"),
        ({"_id": "carts"}, "evstream rebuild carts"),
        (
            {"_id": "carts 2/4", "projection": "carts", "partition": "2/4"},
            "evstream rebuild carts --partition 2/4",
        ),
        (
            {"_id": "s", "projection": "sessions", "partition": "1/2"},
            "evstream rebuild sessions --partition 1/2",
        ),
    ],
)
def test_the_rebuild_that_repairs_a_projection_checkpoint(
    doc: dict[str, Any], command: str
) -> None:
    assert rebuild_command(doc) == command


def test_the_view_of_a_healthy_report() -> None:
    console = Console(file=StringIO(), width=100)
    console.print(check_view({"documents": 3, "events": 3, "streams": 1, "findings": []}))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "3 events in 1 streams" in text and "healthy" in text


def test_progress_on_a_terminal_and_json_on_the_pipe(cli: Any, db: Any) -> None:
    from test_conventions import run_tty

    db.events.insert_many([event(f"s{i % 100}", i // 100 + 1) for i in range(3_000)])
    code, out, err = run_tty(["check"], cli.env(), stdout_tty=False, stderr_tty=True)
    assert code == 7  # no indexes: they were never created
    assert b"checking the log" in err
    report = json.loads(out)
    assert report["events"] == 3_000 and report["streams"] == 100
    code, _, err = run_tty(["check"], cli.env(), stdout_tty=False, stderr_tty=False)
    assert b"checking the log" not in err
