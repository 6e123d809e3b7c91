"""`evstream rebuild NAME` of a user's projection (tests/projections/carts.py, the public API),
checked against a fold computed here, apart: declared types only, foreign documents, versions,
failing handlers, bad modules and partitions."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from test_rebuild import Log, assert_exact

from evstream.events import event_problem, partition_of

HERE = Path(__file__).parent / "projections"
CARTS = str(HERE / "carts.py")
CART_TYPES = ("cart.created", "cart.item_added", "cart.checked_out")
OTHER_TYPES = ("page.viewed", "search", "login")


# --- the fold, independently ---------------------------------------------------------------------


def expected_cart(stream: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": stream, "owner": None, "items": [], "total": 0, "status": None}
    for e in events:
        data = e.get("data") or {}
        if e["type"] == "cart.created":
            doc.update(owner=data.get("owner"), status="open")
        elif e["type"] == "cart.item_added":
            doc["items"] = [*doc["items"], data["sku"]]
            doc["total"] += data["price"]
        elif e["type"] == "cart.checked_out":
            doc["status"] = "checked_out"
    doc.update(version=events[-1]["version"], updated_at=events[-1]["ts"], events=len(events))
    return doc


def expected_carts(db: Any, part: tuple[int, int] | None = None) -> dict[str, dict[str, Any]]:
    """The carts the whole log folds to: valid events of the declared types, by stream."""
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for e in db.events.find():
        if event_problem(e) is None and e["type"] in CART_TYPES:
            if part is None or partition_of(e["stream"], part[1]) == part[0]:
                by_stream.setdefault(e["stream"], []).append(e)
    return {
        s: expected_cart(s, sorted(evs, key=lambda e: e["version"])) for s, evs in by_stream.items()
    }


def carts(db: Any) -> dict[Any, dict[str, Any]]:
    return {d["_id"]: d for d in db.carts.find()}


def assert_carts_exact(db: Any) -> None:
    assert carts(db) == expected_carts(db)


def cart_event(log: Log, stream: str, kind: str, i: int = 0, **kw: Any) -> dict[str, Any]:
    data = {
        "cart.created": {"owner": f"owner-{stream}"},
        "cart.item_added": {"sku": f"sku-{i}", "price": i % 7 + 1},
    }.get(kind, {})
    return log.event(stream, kind, data, **kw)


def shop(log: Log, streams: int = 6, per_stream: int = 4, ts: datetime | None = None) -> None:
    """Carts with page views and searches between their events."""
    events = []
    for n in range(streams):
        name = f"cart-{n:03d}"
        events.append(cart_event(log, name, "cart.created", ts=ts))
        for i in range(per_stream):
            events.append(log.event(name, OTHER_TYPES[i % 3], {"path": "/"}, ts=ts))
            events.append(cart_event(log, name, "cart.item_added", i + n, ts=ts))
        if n % 2:
            events.append(cart_event(log, name, "cart.checked_out", ts=ts))
    log.add(*events)


def summary(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def rebuild_carts(cli: Any, *args: str, module: str = CARTS) -> dict[str, Any]:
    return summary(cli("rebuild", "carts", "--module", module, *args, "-o", "json"))


# --- a user's projection ---------------------------------------------------------------------


def test_full_and_incremental_rebuilds_of_a_user_projection_match_its_fold(cli, db):
    log = Log(db)
    shop(log)
    report = rebuild_carts(cli)
    assert (report["projection"], report["collection"], report["mode"]) == (
        "carts",
        "carts",
        "full",
    )
    assert report["streams"] == 6 and report["created"] == 6
    # Only the declared types are read: 6 created, 24 added, 3 checked out; no page views.
    assert report["events"] == report["applied"] == 6 + 24 + 3
    assert_carts_exact(db)
    checkpoint = db.evstream_projections.find_one({"_id": "carts"})
    assert checkpoint["fold_version"] == 1 and checkpoint["collection"] == "carts"
    assert checkpoint["types"] == list(CART_TYPES)
    log.add(
        cart_event(log, "cart-001", "cart.item_added", 99),
        log.event("cart-002", "search", {"q": "x"}),
        cart_event(log, "cart-new", "cart.created"),
        cart_event(log, "cart-new", "cart.item_added", 5),
    )
    more = rebuild_carts(cli, "--incremental")
    assert more["mode"] == "incremental" and "full_because" not in more
    assert (more["applied"], more["created"], more["updated"]) == (3, 1, 1)
    assert_carts_exact(db)
    assert db.sessions.count_documents({}) == 0  # another projection's collection, untouched


def test_rebuild_sessions_is_rebuild_sessions(cli, db):
    cli("seed", "--users", "5", "--events-per-user", "4", "-o", "json")
    one = summary(cli("rebuild", "sessions", "-o", "json"))
    assert (one["projection"], one["created"]) == ("sessions", 5)
    assert_exact(db)
    two = summary(cli("rebuild-sessions", "-o", "json"))
    assert (two["written"], two["unchanged"]) == (0, 5)
    assert db.evstream_projections.count_documents({}) == 1


def test_pretty_summary_names_the_projection(cli, db):
    shop(Log(db), streams=2)
    result = cli("rebuild", "carts", "--module", CARTS, "-o", "pretty")
    assert result.exit_code == 0, result.stderr
    assert "Rebuilt carts (full)" in result.stdout and "2 carts written" in result.stdout


def test_a_module_from_evstream_projections_by_importable_name(cli, db, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    shop(Log(db), streams=3)
    result = cli("rebuild", "carts", "-o", "json", EVSTREAM_PROJECTIONS="clash_free_x, carts")
    # clash_free_x does not exist: a usage error naming it
    assert result.exit_code == 2 and "clash_free_x" in result.stderr
    report = summary(cli("rebuild", "carts", "-o", "json", EVSTREAM_PROJECTIONS="carts"))
    assert report["created"] == 3
    assert_carts_exact(db)


def test_documents_whose_stream_has_no_more_events_of_those_types_are_deleted(cli, db):
    log = Log(db)
    shop(log, streams=4)
    rebuild_carts(cli)
    db.events.delete_many({"stream": "cart-002", "type": {"$in": list(CART_TYPES)}})
    db.carts.insert_one({"_id": "stale", "items": [], "version": 1})
    report = rebuild_carts(cli)
    assert report["removed"] == 2  # cart-002 (its page views remain) and stale
    assert_carts_exact(db)


# --- documents evstream did not write ----------------------------------------------------------

FOREIGN = {
    "no stream": {"type": "login", "data": {}, "version": 1},
    "stream 42": {"stream": 42, "type": "login", "version": 1},
    "stream null": {"stream": None, "type": "login", "version": 1},
    "stream ObjectId": {"stream": ObjectId(), "type": "login", "version": 1},
    "no version": {"stream": "alice", "type": "login"},
    "version one": {"stream": "alice", "type": "login", "version": "one"},
    "version 2.5": {"stream": "alice", "type": "login", "version": 2.5},
    "no type": {"stream": "alice", "version": 7},
    "no ts": {"stream": "alice", "type": "login", "version": 8, "no_ts": True},
    "ts string": {"stream": "alice", "type": "login", "version": 9, "ts": "2026-01-01T00:00:00Z"},
}


def foreign(shape: str, when: datetime) -> dict[str, Any]:
    doc = dict(FOREIGN[shape])
    doc["_id"] = f"foreign-{uuid.uuid4().hex[:8]}"
    if doc.pop("no_ts", False):
        return doc
    doc.setdefault("ts", when)
    return doc


@pytest.mark.parametrize("shape", sorted(FOREIGN))
def test_each_foreign_shape_is_skipped_alike_by_full_and_incremental(cli, db, shape):
    log = Log(db)
    log.publish("alice", "session.started", {"name": "Alice"})
    first = summary(cli("rebuild-sessions", "-o", "json"))
    assert first["skipped"]["total"] == 0
    doc = foreign(shape, datetime.now(timezone.utc))
    db.events.insert_one(doc)
    log.publish("bob", "login", {"username": "bob"})
    result = cli("rebuild-sessions", "--incremental", "-o", "json")
    incremental = summary(result)
    assert incremental["skipped"]["total"] in (0, 1)  # what its window read of it
    if incremental["skipped"]["total"]:
        assert doc["_id"] in result.stderr and "skipped 1 document" in result.stderr
    after_incremental = {d["_id"]: d for d in db.sessions.find()}
    assert after_incremental == expected_valid(db)
    result = cli("rebuild-sessions", "-o", "json")
    full = summary(result)
    assert full["skipped"] == {
        "total": 1,
        "kinds": {event_problem(doc): 1},
        "sample_ids": [doc["_id"]],
    }
    assert "skipped 1 document that is not events" in result.stderr and doc["_id"] in result.stderr
    assert {d["_id"]: d for d in db.sessions.find()} == after_incremental


def expected_valid(db: Any) -> dict[str, dict[str, Any]]:
    """The sessions table folded over the valid events only (test_rebuild.expected_session)."""
    from test_rebuild import expected_session

    by_stream: dict[str, list[dict[str, Any]]] = {}
    for e in db.events.find():
        if event_problem(e) is None:
            by_stream.setdefault(e["stream"], []).append(e)
    return {
        s: expected_session(s, sorted(evs, key=lambda e: e["version"]))
        for s, evs in by_stream.items()
    }


def test_a_mix_of_foreign_documents_in_one_log(cli, db):
    log = Log(db)
    now = datetime.now(timezone.utc)
    log.publish("alice", "session.started", {"name": "Alice"})
    log.publish("carol", "login", {"username": "carol"})
    summary(cli("rebuild-sessions", "-o", "json"))
    docs = [foreign(shape, now) for shape in sorted(FOREIGN)]
    # ObjectId ids and extra fields are events like any other.
    valid_oid = {**log.event("dave", "login", {"username": "d"}), "_id": ObjectId(), "__v": 0}
    db.events.insert_many([*docs, valid_oid])
    log.publish("alice", "logout")
    incremental = summary(cli("rebuild-sessions", "--incremental", "-o", "json"))
    assert incremental["skipped"]["total"] <= len(docs)
    after_incremental = {d["_id"]: d for d in db.sessions.find()}
    want = expected_valid(db)
    assert "dave" in want and after_incremental == want
    full = summary(cli("rebuild-sessions", "-o", "json"))
    assert full["skipped"]["total"] == len(docs)
    assert len(full["skipped"]["sample_ids"]) == 5
    assert {d["_id"]: d for d in db.sessions.find()} == want
    # A projection of a few types skips them too, without crashing (no type: not read at all).
    db.events.insert_many(
        [
            {"_id": "c1", "stream": 42, "type": "cart.created", "ts": now, "version": 30},
            {"_id": "c2", "stream": "cart-x", "type": "cart.created", "ts": "then", "version": 1},
        ]
    )
    shop(log, streams=2)
    one = rebuild_carts(cli)
    assert one["skipped"]["total"] == 2 and set(one["skipped"]["sample_ids"]) == {"c1", "c2"}
    assert_carts_exact(db)
    rebuild_carts(cli, "--incremental")
    assert_carts_exact(db)


# --- versions of the fold ------------------------------------------------------------------------


def test_a_version_bump_rebuilds_in_full_and_says_why(cli, db):
    log = Log(db)
    shop(log, streams=3)
    rebuild_carts(cli)
    v2 = str(HERE / "carts_v2.py")
    result = cli("rebuild", "carts", "--module", v2, "--incremental", "-o", "json")
    report = summary(result)
    assert report["mode"] == "full" and "version is now 2 (was 1)" in report["full_because"]
    assert "rebuilding in full" in result.stderr
    stored = carts(db)
    assert all(doc["cents"] == doc["total"] * 100 for doc in stored.values())
    assert db.evstream_projections.find_one({"_id": "carts"})["fold_version"] == 2
    assert rebuild_carts(cli, "--incremental", module=v2)["mode"] == "incremental"
    # Back to version 1: its documents lack nothing, but carry a field it does not know.
    back = rebuild_carts(cli, "--incremental")
    assert back["mode"] == "full" and "version is now 1 (was 2)" in back["full_because"]
    assert_carts_exact(db)


@pytest.mark.parametrize("damage", ["other shape", "deleted"])
def test_a_stored_document_of_another_shape_is_never_continued(cli, db, damage):
    log = Log(db)
    now = datetime.now(timezone.utc)
    shop(log, streams=2, ts=now - timedelta(hours=2))  # before the window of the next run
    log.add(cart_event(log, "cart-001", "cart.checked_out", ts=now - timedelta(hours=1)))
    rebuild_carts(cli)
    # Someone's hand-edit (or an older fold) left a document that is not this fold's state.
    if damage == "deleted":
        db.carts.delete_one({"_id": "cart-000"})
    else:
        db.carts.replace_one({"_id": "cart-000"}, {"_id": "cart-000", "version": 5, "total": 1000})
    log.add(cart_event(log, "cart-000", "cart.item_added", 3))
    report = rebuild_carts(cli, "--incremental")
    assert report["mode"] == "incremental"
    assert_carts_exact(db)


# --- failures in user code -----------------------------------------------------------------------


def test_a_raising_handler_stops_the_run_and_names_the_event(cli, db):
    log = Log(db)
    shop(log, streams=3)
    rebuild_carts(cli)
    before = carts(db)
    checkpoint = db.evstream_projections.find_one({"_id": "carts"})
    good = cart_event(log, "cart-000", "cart.item_added", 1)
    bad = log.event("cart-001", "cart.item_added", {"sku": "boom", "price": 1})
    after = cart_event(log, "cart-001", "cart.checked_out")
    log.add(good, bad, after)
    for args in ([], ["--incremental"]):
        result = cli("rebuild", "carts", "--module", CARTS, *args)
        assert result.exit_code == 1, result.stderr
        errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
        assert len(errors) == 1, result.stderr
        line = errors[0]
        version = f"version {bad['version']}"
        for part in ("'carts'", bad["_id"], "'cart-001'", version, "cart.item_added"):
            assert part in line, (part, line)
        assert "ValueError: a sku the handler refuses" in line
        assert "Traceback" not in result.stderr
        assert carts(db)["cart-001"] == before["cart-001"]  # nothing half-applied
        assert db.evstream_projections.find_one({"_id": "carts"}) == checkpoint
    debug = cli.run("--debug", "rebuild", "carts", "--module", CARTS)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "a sku the handler refuses" in debug.stderr


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        ("broken.py", "evstream_no_such_module"),
        ("missing.py", "no such file"),
        ("clash.py", "two projections have the collection 'shared'"),
        ("evstream_nowhere_module", "evstream_nowhere_module"),
    ],
)
def test_a_bad_module_is_a_usage_error_naming_it(cli, db, module, needle):
    ref = module if not module.endswith(".py") else str(HERE / module)
    result = cli("rebuild", "carts", "--module", ref)
    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_a_module_without_the_projection_names_those_it_defines(cli, db):
    result = cli("rebuild", "orders_x", "--module", CARTS)
    assert result.exit_code == 2
    assert "no projection named 'orders_x'" in result.stderr and "carts" in result.stderr


def test_two_projections_with_one_name_are_refused(cli, db):
    other = str(HERE / "other_carts.py")
    result = cli("rebuild", "carts", "--module", other, EVSTREAM_PROJECTIONS=CARTS)
    assert result.exit_code == 2
    assert "two projections have the name 'carts'" in result.stderr


# --- partitions ----------------------------------------------------------------------------------


def test_partitions_together_give_the_full_rebuild(cli, db):
    log = Log(db)
    shop(log, streams=24, per_stream=2)
    for i in (1, 2, 3):
        report = rebuild_carts(cli, "--partition", f"{i}/3")
        assert report["partition"] == f"{i}/3"
        assert carts(db) == {
            k: v for p in range(1, i + 1) for k, v in expected_carts(db, (p, 3)).items()
        }
    assert_carts_exact(db)
    keys = {d["_id"] for d in db.evstream_projections.find()}
    assert keys == {"carts part 1 of 3", "carts part 2 of 3", "carts part 3 of 3"}
    # A full rebuild of part 1 after part 2's streams lost all their events: only part 1's own
    # stale documents go; part 2's stay until part 2 runs.
    two = [s for s in expected_carts(db, (2, 3))]
    one = [s for s in expected_carts(db, (1, 3))]
    db.events.delete_many({"stream": {"$in": [two[0], one[0]]}})
    report = rebuild_carts(cli, "--partition", "1/3")
    assert report["removed"] == 1
    assert two[0] in carts(db) and one[0] not in carts(db)
    rebuild_carts(cli, "--partition", "2/3")
    assert_carts_exact(db)
    log.add(
        cart_event(log, two[1], "cart.checked_out"), cart_event(log, one[1], "cart.checked_out")
    )
    assert rebuild_carts(cli, "--partition", "2/3", "--incremental")["mode"] == "incremental"
    assert carts(db)[two[1]]["status"] == "checked_out"
    assert carts(db)[one[1]] != expected_carts(db)[one[1]]  # part 1 has not run yet
    rebuild_carts(cli, "--partition", "1/3", "--incremental")
    assert_carts_exact(db)


@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "1/", "2"])
def test_a_bad_partition_is_a_usage_error(cli, db, bad):
    result = cli("rebuild", "carts", "--module", CARTS, "--partition", bad)
    assert result.exit_code == 2 and "--partition" in result.stderr


def test_status_lists_each_projection_with_its_lag(cli, db):
    from evstream.projection import projections_status
    from evstream.settings import Settings
    from evstream.storage import connect

    log = Log(db)
    shop(log, streams=2)
    rebuild_carts(cli)
    summary(cli("rebuild-sessions", "-o", "json"))
    later = datetime.now(timezone.utc) + timedelta(seconds=5)
    log.add(
        cart_event(log, "cart-000", "cart.checked_out", ts=later),
        log.event("cart-000", "page.viewed", ts=later),
    )
    store = connect(Settings(uri=cli.uri, db=cli.db), lambda message: None)
    try:
        rows = {row["name"]: row for row in projections_status(store)}
    finally:
        store.close()
    assert set(rows) == {"carts", "sessions"}
    assert (rows["carts"]["collection"], rows["carts"]["version"]) == ("carts", 1)
    assert rows["carts"]["lag"] == 1 and rows["sessions"]["lag"] == 2
    assert rows["carts"]["mode"] == "full" and isinstance(rows["carts"]["last_run_at"], datetime)
