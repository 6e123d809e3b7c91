"""A log that another application shaped (docs/adopting.md): every command on a log written by
another client with pymongo (its own field names, ObjectId ids, epoch-ms ts, no versions), a
mapped log with versions, and the property that incremental equals full on such a log."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pymongo
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_projection import CART_TYPES, CARTS
from waiting import wait_for

from evstream.events import partition_of
from evstream.fieldmap import from_table, id_order
from evstream.projection import plan_rebuild, rebuild
from evstream.projections import load_projection
from evstream.settings import Settings
from evstream.storage import connect
from evstream.storage.projections import read_log

UTC = timezone.utc
# The app's log: mongoose-style names, epoch-ms ts, no per-stream versions.
APP_MAP = {
    "collection": "domain_events",
    "stream": "aggregateId",
    "type": "eventType",
    "data": "payload",
    "meta": "metadata",
    "ts": "createdAt",
    "ts_unit": "ms",
    "version": False,
}
# A mapped log that keeps versions, under its own names, with BSON dates.
VERSIONED_MAP = {
    "collection": "history",
    "stream": "meta.entity",
    "type": "kind",
    "data": "body",
    "meta": "meta",
    "ts": "at",
    "version": "seq",
}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def app_event(stream: str, kind: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    """What the app writes: its own names, an ObjectId _id, ts in epoch ms, mongoose's __v."""
    return {
        "_id": ObjectId(),
        "aggregateId": stream,
        "eventType": kind,
        "payload": data,
        "metadata": {"source": "login-app"},
        "createdAt": ms(at),
        "__v": 0,
    }


def env(table: dict[str, Any]) -> dict[str, str]:
    return {"EVSTREAM_LOG_MAP": json.dumps(table)}


def lines(text: str) -> list[dict[str, Any]]:
    from bson import json_util

    return [json_util.loads(line) for line in text.splitlines() if line.strip()]


def sessions_of(db: Any) -> dict[str, dict[str, Any]]:
    return {d["_id"]: d for d in db.sessions.find()}


# --- the property: incremental equals full on an app's log ---------------------------------------


def expected_carts(db: Any) -> dict[str, dict[str, Any]]:
    """The carts the app's log folds to, independently: by stream in (ts, id) order."""
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for e in db.domain_events.find():
        if e.get("eventType") in CART_TYPES and isinstance(e.get("createdAt"), int):
            by_stream.setdefault(e["aggregateId"], []).append(e)
    carts = {}
    for stream, events in by_stream.items():
        events.sort(key=lambda e: (e["createdAt"], *id_order(e["_id"])))
        doc: dict[str, Any] = {"_id": stream, "owner": None, "items": [], "total": 0}
        doc["status"] = None
        for e in events:
            data = e["payload"]
            if e["eventType"] == "cart.created":
                doc.update(owner=data.get("owner"), status="open")
            elif e["eventType"] == "cart.item_added":
                doc["items"] = [*doc["items"], data["sku"]]
                doc["total"] += data["price"]
            else:
                doc["status"] = "checked_out"
        last = events[-1]["createdAt"]
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=last)
        doc.update(version=len(events), updated_at=at, events=len(events))
        carts[stream] = doc
    return carts


STREAMS = [f"c{i}" for i in range(6)]
TYPES = [*CART_TYPES, "page.viewed"]
LAGS = [0, 0, 0, 300, 2_000, 40_000, 3_600_000]  # ms behind now: late, or clocks behind

inserts = st.tuples(
    st.just("insert"),
    st.lists(
        st.tuples(
            st.sampled_from(STREAMS),
            st.sampled_from(TYPES),
            st.integers(1, 9),
            st.sampled_from(LAGS),
            st.booleans(),  # the same ms as the previous insert (a tie broken by _id)
        ),
        min_size=1,
        max_size=6,
    ),
)
runs = st.tuples(
    st.sampled_from(["full", "incremental", "incremental"]),
    st.sampled_from([None, None, 1, 2]),
    st.sampled_from([0.0, 1.0, 30.0]),
)


@pytest.fixture
def app_store(server_uri: str) -> Iterator[tuple[Any, Any]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server_uri, tz_aware=True)
    store = connect(Settings(uri=server_uri, db="unused", log=APP_MAP), lambda message: None)
    try:
        yield store, client
    finally:
        store.close()
        client.close()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=st.lists(st.one_of(inserts, runs), min_size=2, max_size=10))
def test_incremental_equals_full_on_an_apps_log(app_store: Any, history: list[Any]) -> None:
    store, client = app_store
    name = f"adopt_{uuid.uuid4().hex[:12]}"
    db = client[name]
    store.db = store.client.get_database(name, read_preference=store.db.read_preference)
    carts = load_projection("carts", CARTS)
    last_ms = None
    try:
        for op in history:
            if op[0] == "insert":
                now = ms(datetime.now(UTC))
                docs = []
                for stream, kind, n, lag, tie in op[1]:
                    at = last_ms if tie and last_ms is not None else now - lag
                    last_ms = at
                    data = {"owner": stream} if kind == "cart.created" else {"sku": f"k{n}"}
                    data["price"] = n
                    docs.append(
                        {
                            "_id": ObjectId(),
                            "aggregateId": stream,
                            "eventType": kind,
                            "payload": data,
                            "createdAt": at,
                        }
                    )
                db.domain_events.insert_many(docs)
                continue
            mode, part, margin = op
            plan = plan_rebuild(
                store,
                carts,
                incremental=mode == "incremental",
                margin=margin,
                part=None if part is None else (part, 2),
            )
            rebuild(store, plan, batch_size=3)
            want = expected_carts(db)
            got = {d["_id"]: d for d in db.carts.find()}

            def mine(docs: dict[str, Any], part: int | None = part) -> dict[str, Any]:
                return {k: v for k, v in docs.items() if part is None or partition_of(k, 2) == part}

            assert mine(got) == mine(want), (mode, part)
        rebuild(store, plan_rebuild(store, carts, incremental=True))
        assert {d["_id"]: d for d in db.carts.find()} == expected_carts(db)
    finally:
        client.drop_database(name)


# --- every command on the app's log --------------------------------------------------------------


@pytest.fixture
def app(cli: Any, db: Any) -> Any:
    """The CLI with the app's map, over a log the app wrote: alice logs in twice, bob once."""
    db.domain_events.insert_many(
        [
            app_event("alice", "session.started", {"name": "Alice"}, T0),
            app_event("alice", "login", {"username": "alice"}, T0 + timedelta(seconds=1)),
            app_event("bob", "login", {"username": "bob"}, T0 + timedelta(seconds=2)),
            app_event("alice", "login", {"username": "alice"}, T0 + timedelta(seconds=3)),
        ]
    )

    def run(*args: str, input: str | bytes | None = None, **extra: str) -> Any:
        return cli(*args, input=input, **env(APP_MAP), **extra)

    run.db = db  # type: ignore[attr-defined]
    run.cli = cli  # type: ignore[attr-defined]
    return run


def test_publish_writes_the_apps_shape(app: Any) -> None:
    r = app("publish", "login", "-s", "carol", "-d", '{"username": "carol"}', "-o", "json")
    assert r.exit_code == 0, r.stderr
    [stored] = list(app.db.domain_events.find({"aggregateId": "carol"}))
    assert stored["eventType"] == "login"
    assert stored["payload"] == {"username": "carol"}
    assert isinstance(stored["createdAt"], int)  # epoch ms, as the app writes it
    assert abs(stored["createdAt"] - ms(datetime.now(UTC))) < 60_000
    assert not {"stream", "type", "data", "ts", "version"} & set(stored)
    assert json.loads(r.stdout)["aggregateId"] == "carol"  # the stored event, as stored
    assert "events" not in app.db.list_collection_names()
    r = app("publish", "logout", "-s", "carol", "-o", "pretty")
    assert r.exit_code == 0, r.stderr
    assert "logout" in r.stdout and "carol" in r.stdout and "?" not in r.stdout


def test_publish_file_appends_without_versions(app: Any) -> None:
    text = "".join(
        json.dumps({"type": "login", "stream": f"u{i % 3}", "data": {"n": i}}) + "\n"
        for i in range(10)
    )
    r = app("publish", "--file", "-", input=text)
    assert r.exit_code == 0, r.stderr
    assert app.db.domain_events.count_documents({"aggregateId": {"$in": ["u0", "u1", "u2"]}}) == 10
    assert app.db.domain_events.count_documents({"sequence": {"$exists": True}}) == 0
    stored = list(app.db.domain_events.find({"aggregateId": "u0"}))
    assert all(isinstance(d["createdAt"], int) and "ts" not in d for d in stored)


def test_expected_version_is_refused_on_a_log_without_versions(app: Any) -> None:
    before = app.db.domain_events.count_documents({})
    r = app("publish", "login", "-s", "alice", "--expected-version", "2")
    assert r.exit_code == 4
    assert "no versions" in r.stderr or "has none" in r.stderr
    assert "version = false" in r.stderr
    line = json.dumps({"type": "login", "stream": "bob", "expected_version": 1})
    r = app("publish", "--file", "-", input=line + "\n")
    assert r.exit_code == 4
    assert app.db.domain_events.count_documents({}) == before


def test_watch_prints_documents_as_stored_and_filters_on_the_server(app: Any) -> None:
    r = app("watch", "--from", "start", "--no-follow", "-o", "json")
    assert r.exit_code == 0, r.stderr
    docs = [line["doc"] for line in lines(r.stdout)]
    assert [d["eventType"] for d in docs] == ["session.started", "login", "login", "login"]
    assert all(isinstance(d["_id"], ObjectId) and d["__v"] == 0 for d in docs)
    r = app("watch", "--from", "start", "--no-follow", "-o", "json", "--type", "login",
            "--stream", "alice")  # fmt: skip
    assert [d["doc"]["createdAt"] for d in lines(r.stdout)] == [ms(T0) + 1000, ms(T0) + 3000]
    since = (T0 + timedelta(seconds=2)).isoformat()
    r = app("watch", "--from", since, "--no-follow", "-o", "json")
    assert [d["doc"]["aggregateId"] for d in lines(r.stdout)] == ["bob", "alice"]


def test_watch_pretty_view_shows_type_and_stream_from_the_map(app: Any) -> None:
    r = app("watch", "--from", "start", "--no-follow", "-o", "pretty")
    assert r.exit_code == 0, r.stderr
    assert "not an event" not in r.stdout
    rows = [row for row in r.stdout.splitlines() if row.strip()]
    assert len(rows) == 4
    assert "session.started" in rows[0] and "alice" in rows[0]
    assert "login" in rows[2] and "bob" in rows[2] and "@" not in rows[2]


def test_copies_of_stored_documents_stay_exact(app: Any, server_uri: str) -> None:
    r = app("watch", "--from", "start", "--no-follow", "-o", "json")
    copy_db = f"{app.db.name}_copy"
    try:
        r2 = app("publish", "--file", "-", input=r.stdout, EVSTREAM_DB=copy_db)
        assert r2.exit_code == 0, r2.stderr
        client: Any = pymongo.MongoClient(server_uri, tz_aware=True)
        try:
            copied = list(client[copy_db].domain_events.find().sort("_id", 1))
        finally:
            client.drop_database(copy_db)
            client.close()
        assert copied == list(app.db.domain_events.find().sort("_id", 1))
    finally:
        pass


def test_rebuild_folds_the_apps_events(app: Any) -> None:
    r = app("rebuild", "sessions", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["skipped"]["total"] == 0
    sessions = sessions_of(app.db)
    assert sessions["alice"]["login_count"] == 2
    assert sessions["alice"]["name"] == "Alice"
    assert sessions["alice"]["events"] == 3 and sessions["alice"]["version"] == 3
    assert sessions["alice"]["last_login"] == T0 + timedelta(seconds=3)
    assert sessions["bob"]["login_count"] == 1


def test_incremental_takes_the_apps_new_and_late_events(app: Any) -> None:
    assert app("rebuild", "sessions").exit_code == 0
    now = datetime.now(UTC)
    app.db.domain_events.insert_many(
        [
            app_event("bob", "logout", {}, now),
            # late: older than bob's login already applied (but after the checkpoint's time)
            app_event("carol", "login", {"username": "carol"}, now - timedelta(seconds=1)),
        ]
    )
    r = app("rebuild", "sessions", "--incremental", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["skipped"]["total"] == 0  # every document read fits the map
    incremental = sessions_of(app.db)
    assert incremental["bob"]["status"] == "signed_out"
    assert incremental["carol"]["login_count"] == 1
    assert app("rebuild", "sessions").exit_code == 0
    assert sessions_of(app.db) == incremental


def test_documents_without_a_usable_ts_are_skipped_alike(app: Any) -> None:
    bad = app_event("alice", "login", {}, T0)
    bad["createdAt"] = "yesterday"
    app.db.domain_events.insert_one(bad)
    full = json.loads(app("rebuild", "sessions", "-o", "json").stdout)
    assert full["skipped"]["kinds"] == {"ts not a date": 1}
    assert sessions_of(app.db)["alice"]["login_count"] == 2
    incremental = json.loads(app("rebuild", "sessions", "--incremental", "-o", "json").stdout)
    assert incremental["mode"] == "incremental"
    assert incremental["skipped"]["kinds"] == full["skipped"]["kinds"]  # counted alike
    r = app("check", "-o", "json")
    report = json.loads(r.stdout)
    assert report["map"]["fits"] == 4 and report["map"]["documents"] == 5
    assert report["map"]["misfits"] == [bad["_id"]] or report["map"]["misfits"] == [
        {"$oid": str(bad["_id"])}
    ]


def test_rebuild_follow_applies_the_apps_events(app: Any) -> None:
    import threading

    proc = app.cli.popen("rebuild", "sessions", "--follow", "--idle-timeout", "20", **env(APP_MAP))
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(iter(proc.stderr.readline, "")))
    reader.start()
    try:
        wait_for(lambda: any("live" in line for line in said), 30, "the follower to be live")
        assert "alice" in sessions_of(app.db)
        bad = app_event("erin", "login", {}, datetime.now(UTC))
        bad["createdAt"] = "just now"  # no usable ts: skipped and counted, as full runs do
        app.db.domain_events.insert_one(bad)
        app.db.domain_events.insert_one(
            app_event("dave", "login", {"username": "dave"}, datetime.now(UTC))
        )
        wait_for(
            lambda: sessions_of(app.db).get("dave", {}).get("login_count") == 1,
            30,
            "the follower to apply the app's event",
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=30)
    err = "".join(said)
    assert "erin" not in sessions_of(app.db)
    assert "skipped 1 document" in err and "(1 ts not a date)" in err


def test_check_skips_version_findings_and_reports_the_fit(app: Any) -> None:
    assert app("publish", "login", "-s", "alice").exit_code == 0  # creates the indexes
    r = app("check", "-o", "json")
    assert r.exit_code == 0, r.stdout
    report = json.loads(r.stdout)
    assert report["events"] == 5 and report["streams"] == 2
    assert report["map"]["fits"] == 5 and report["map"]["misfits"] == []
    indexes = {tuple(ix["key"]) for ix in app.db.domain_events.list_indexes()}
    assert ("aggregateId", "createdAt") in indexes and ("createdAt",) in indexes


def test_status_counts_the_apps_events(app: Any) -> None:
    r = app("status", "-o", "json")
    assert r.exit_code == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["counts"]["events"] == 4
    assert status["counts"]["streams"] == 2
    assert {row["type"]: row["events"] for row in status["types"]} == {
        "login": 3,
        "session.started": 1,
    }


def test_rebuild_partitions_together_give_the_full_rebuild(app: Any) -> None:
    assert app("rebuild", "sessions").exit_code == 0
    full = sessions_of(app.db)
    app.db.sessions.drop()
    for part in ("1/2", "2/2"):
        assert app("rebuild", "sessions", "--partition", part).exit_code == 0
    assert sessions_of(app.db) == full


def test_watch_partitions_split_the_apps_streams(app: Any) -> None:
    seen = {}
    for part in ("1/2", "2/2"):
        r = app("watch", "--from", "start", "--no-follow", "-o", "json", "--checkpoint", "w",
                "--partition", part)  # fmt: skip
        assert r.exit_code == 0, r.stderr
        seen[part] = {d["doc"]["aggregateId"] for d in lines(r.stdout)}
    assert seen["1/2"] | seen["2/2"] == {"alice", "bob"}
    assert not seen["1/2"] & seen["2/2"]
    for part, streams in seen.items():
        assert all(partition_of(s, 2) == int(part[0]) for s in streams)


# --- a bad map -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"stream": "aggregateId", "type": "aggregateId"}, "both 'aggregateId'"),
        ({"ts_unit": "hours"}, "ts_unit"),
        (
            {
                "stream": "nothere",
                "type": "eventType",
                "data": "payload",
                "ts": "createdAt",
                "ts_unit": "ms",
                "version": False,
                "collection": "domain_events",
            },
            "nothere",
        ),  # fmt: skip
        ({"colour": "blue"}, "unknown key 'colour'"),
    ],
)
def test_a_bad_map_is_refused(app: Any, table: dict[str, Any], says: str) -> None:
    r = app.cli("status", **env(table))
    assert r.exit_code == 2
    assert says in r.stderr
    assert "EVSTREAM_LOG_MAP" in r.stderr  # names where the map came from
    assert "Traceback" not in r.stderr


# --- a mapped log with versions ------------------------------------------------------------------


def test_a_mapped_log_with_versions(cli: Any, db: Any) -> None:
    db.history.insert_many(
        [
            {
                "_id": "h1",
                "meta": {"entity": "e1"},
                "seq": 1,
                "kind": "login",
                "body": {},
                "at": T0,
            },  # fmt: skip
            {
                "_id": "h2",
                "meta": {"entity": "e1"},
                "seq": 3,
                "kind": "login",
                "body": {},
                "at": T0 + timedelta(seconds=1),
            },  # fmt: skip
        ]
    )
    run = dict(env(VERSIONED_MAP))
    r = cli("publish", "login", "-s", "e1", "-o", "json", **run)
    assert r.exit_code == 0, r.stderr
    stored = db.history.find_one({"seq": 4})
    assert stored is not None and stored["meta"]["entity"] == "e1" and stored["kind"] == "login"
    r = cli("publish", "login", "-s", "e1", "--expected-version", "1", **run)
    assert r.exit_code == 5
    text = "".join(json.dumps({"type": "login", "stream": s}) + "\n" for s in ("e1", "e2", "e1"))
    r = cli("publish", "--file", "-", input=text, **run)
    assert r.exit_code == 0, r.stderr
    assert [d["seq"] for d in db.history.find({"meta.entity": "e1"}).sort("seq", 1)] == [
        1,
        3,
        4,
        5,
        6,
    ]
    assert db.history.find_one({"meta.entity": "e2"})["seq"] == 1
    r = cli("check", "-o", "json", **run)
    assert r.exit_code == 7
    kinds = {f["kind"] for f in json.loads(r.stdout)["findings"]}
    assert kinds == {"version gap"}
    r = cli("watch", "--from", "start", "--no-follow", "-o", "pretty", **run)
    assert "e1@3" in r.stdout and "e1@4" in r.stdout
    r = cli("watch", "--from", "start", "--no-follow", "-o", "json", **run)
    assert [d["doc"]["seq"] for d in lines(r.stdout)] == [1, 3, 4, 5, 1, 6]
    r = cli("rebuild", "sessions", **run)
    assert r.exit_code == 0, r.stderr
    assert sessions_of(db)["e1"]["version"] == 6
    assert sessions_of(db)["e1"]["login_count"] == 5


def test_the_mixed_log_is_a_clear_finding(cli: Any, db: Any) -> None:
    """evstream wrote versions, an app did not: check says so and what to set."""
    table = {**VERSIONED_MAP}
    assert cli("publish", "login", "-s", "e1", **env(table)).exit_code == 0
    db.history.insert_one({"meta": {"entity": "e1"}, "kind": "login", "body": {}, "at": T0})
    r = cli("check", "-o", "json", **env(table))
    assert r.exit_code == 7
    [finding] = [f for f in json.loads(r.stdout)["findings"] if f["kind"] == "not an event"]
    assert "no version" in finding["problem"]
    assert "version = false" in finding["fix"]


# --- the domain: maps and their translation ------------------------------------------------------


def test_canonical_and_stored_are_inverse() -> None:
    fm = from_table(APP_MAP, "evstream.toml")
    doc = app_event("alice", "login", {"a": 1}, T0)
    event = fm.canonical(doc)
    assert event == {
        "_id": doc["_id"],
        "stream": "alice",
        "version": None,
        "type": "login",
        "data": {"a": 1},
        "meta": {"source": "login-app"},
        "ts": T0,
    }
    fields, rest = fm.split_stored(doc)
    assert rest == {"__v": 0}
    assert fm.stored(fields, rest) == doc


def test_the_default_map_translates_nothing() -> None:
    fm = from_table(None)
    assert not fm.shaped and fm.versioned and fm.collection == "events"


# --- evstream init -------------------------------------------------------------------------------


def test_init_proposes_the_apps_map(app: Any, server_uri: str, tmp_path: Any) -> None:
    from evstream.adopting import propose_map, write_config

    store = connect(Settings(uri=server_uri, db=app.db.name), lambda m: None, verify=False)
    try:
        proposal = propose_map(store, "domain_events")
    finally:
        store.close()
    fm = proposal.fieldmap
    assert (fm.collection, fm.stream, fm.type, fm.data, fm.meta, fm.ts) == (
        "domain_events",
        "aggregateId",
        "eventType",
        "payload",
        "metadata",
        "createdAt",
    )
    assert fm.ts_unit == "ms" and not fm.versioned
    assert (proposal.fits, proposal.sampled) == (4, 4)
    assert "version = false" in fm.toml() and 'ts_unit = "ms"' in fm.toml()
    path = write_config(proposal, tmp_path)
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    assert from_table(tomllib.loads(path.read_text())["log"]) == fm
    with pytest.raises(Exception, match="never overwrites"):
        write_config(proposal, tmp_path)


@pytest.mark.parametrize("collection", ["empty_one", "missing_one"])
def test_init_refuses_an_empty_or_missing_collection(
    cli: Any, db: Any, server_uri: str, collection: str
) -> None:
    from evstream.adopting import propose_map
    from evstream.errors import InvalidInput

    db.create_collection("empty_one")
    store = connect(Settings(uri=server_uri, db=db.name), lambda m: None, verify=False)
    try:
        with pytest.raises(InvalidInput, match="empty" if collection == "empty_one" else "exist"):
            propose_map(store, collection)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("docs", "want"),
    [
        (
            [
                {
                    "_id": 1,
                    "stream_id": "s",
                    "event_type": "t",
                    "body": {},
                    "timestamp": T0,
                    "revision": 1,
                    "headers": {},
                }
            ],  # fmt: skip
            {
                "stream": "stream_id",
                "type": "event_type",
                "data": "body",
                "ts": "timestamp",
                "version": "revision",
                "meta": "headers",
                "ts_unit": "date",
            },  # fmt: skip
        ),
        (
            [{"_id": 1, "userId": "u", "name": "login", "data": {}, "created_at": 1_700_000_000}],
            {
                "stream": "userId",
                "type": "name",
                "data": "data",
                "ts": "created_at",
                "version": None,
                "ts_unit": "s",
            },  # fmt: skip
        ),
        (
            [
                {
                    "_id": 1,
                    "metadata": {"aggregateId": "a"},
                    "type": "t",
                    "payload": {},
                    "ts": T0,
                    "version": "not a number",
                }
            ],  # fmt: skip
            {"stream": "metadata.aggregateId", "type": "type", "version": None},
        ),
    ],
)
def test_propose_recognises_the_common_names(docs: list[Any], want: dict[str, Any]) -> None:
    from evstream.fieldmap import propose

    fm = propose("log", docs).fieldmap
    for key, value in want.items():
        assert getattr(fm, key) == value, key


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"stream": "a", "type": "a"}, "stream and type are both 'a'"),
        ({"stream": "x", "type": "x.y"}, "lies inside stream"),
        ({"ts_unit": "h"}, "ts_unit = 'h'"),
        ({"id": "eventId"}, "map id to"),
        ({"stream": "$bad"}, "not a field path"),
        ({"stream": "a..b"}, "not a field path"),
        ({"version": True}, "version must be"),
        ({"collection": "system.x"}, "collection"),
        ({"wat": 1}, "unknown key 'wat'"),
    ],
)
def test_from_table_refuses_bad_maps(table: dict[str, Any], says: str) -> None:
    from evstream.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        from_table(table, "/p/evstream.toml")
    assert says in str(caught.value)
    assert str(caught.value).startswith("/p/evstream.toml: [log]")
    assert caught.value.exit_code == 2


def test_version_false_folds_a_mixed_log_by_ts_and_id(cli: Any, db: Any) -> None:
    """evstream wrote versions, an app did not: with version = false both fold in (ts, id)."""
    assert cli("publish", "login", "-s", "alice").exit_code == 0  # version 1, ts now
    now = datetime.now(UTC)
    db.events.insert_one(
        {
            "_id": ObjectId(),
            "stream": "alice",
            "type": "logout",
            "data": {},
            "ts": now + timedelta(seconds=5),
        }
    )
    table = {"version": False}
    r = cli("rebuild", "sessions", "-o", "json", **env(table))
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["skipped"]["total"] == 0
    alice = sessions_of(db)["alice"]
    assert (alice["login_count"], alice["status"], alice["events"]) == (1, "signed_out", 2)
    r = cli("check", "-o", "json", **env(table))
    assert json.loads(r.stdout)["map"]["fits"] == 2


@pytest.mark.parametrize("unit", ["s", "ms"])
def test_epoch_ts_round_trips(unit: str) -> None:
    fm = from_table({"ts": "at", "ts_unit": unit})
    moment = datetime(2026, 5, 1, 10, 20, 30, 0 if unit == "s" else 123000, tzinfo=UTC)
    stored = fm.build("i", "s", 1, "t", {}, None, moment)
    assert isinstance(stored["at"], int)
    assert fm.canonical(stored)["ts"] == moment
    assert fm.canonical({**stored, "at": "soon"})["ts"] == "soon"  # not a number: as it is


def test_status_figures_on_the_mapped_paths_where_queries_serve_them() -> None:
    """MongoStore's index-served status queries, on a mapped log with dates (mongomock, which
    has no $type with a list: the map without versions)."""
    import mongomock

    from evstream.storage import Store

    client: Any = mongomock.MongoClient(tz_aware=True)
    fm = from_table({**VERSIONED_MAP, "version": False})
    store = Store(client, client["unit"], "mongodb://mock", False, "mongomock", fieldmap=fm)
    store.events.insert_many(
        [
            {
                "_id": f"h{i}",
                "meta": {"entity": f"e{i % 2}"},
                "seq": i // 2 + 1,
                "kind": "k",
                "body": {},
                "at": T0 + timedelta(seconds=i),
            }  # fmt: skip
            for i in range(5)
        ]
        + [{"_id": "x", "kind": "k"}]
    )
    figures = store.log_figures(lambda oldest: None)
    assert figures.types == [{"type": "k", "events": 5}]
    assert figures.streams == 2
    assert figures.skipped.total == 1
    assert store.edge_event(newest=True)["ts"] == T0 + timedelta(seconds=4)
    assert store.edge_event(newest=False)["stream"] == "e0"


# --- the CLI's own pieces: init, --canonical, --exec --------------------------------------------


def test_init_command_prints_and_writes_the_map(app: Any, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    r = app.cli("init", "domain_events", "-o", "pretty")
    assert r.exit_code == 0, r.stderr
    assert 'stream = "aggregateId"' in r.stdout and "version = false" in r.stdout
    assert "fits 4 of the 4 sampled documents" in r.stdout
    assert not (tmp_path / "evstream.toml").exists()
    r = app.cli("init", "domain_events", "--write", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["log"]["stream"] == "aggregateId"
    written = (tmp_path / "evstream.toml").read_text()
    assert 'ts = "createdAt"' in written
    r = app.cli("init", "domain_events", "--write")
    assert r.exit_code == 2 and "never overwrites" in r.stderr
    assert (tmp_path / "evstream.toml").read_text() == written
    r = app.cli("init", "nothing_here")
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_watch_canonical_prints_canonical_events(app: Any) -> None:
    r = app("watch", "--from", "start", "--no-follow", "-o", "json", "--canonical")
    assert r.exit_code == 0, r.stderr
    docs = [line["doc"] for line in lines(r.stdout)]
    assert docs[0]["stream"] == "alice" and docs[0]["type"] == "session.started"
    assert docs[0]["ts"].replace(tzinfo=UTC) == T0 and docs[0]["version"] is None
    assert "aggregateId" not in docs[0]


def test_exec_handlers_receive_canonical_events(app: Any, tmp_path: Any) -> None:
    out = tmp_path / "got.jsonl"
    r = app("watch", "--from", "start", "--no-follow", "--checkpoint", "h", "--exec",
            f"cat >> {out}")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    docs = [line["doc"] for line in lines(out.read_text())]
    assert [d["stream"] for d in docs] == ["alice", "alice", "bob", "alice"]
    assert all("eventType" not in d for d in docs)


def test_seed_writes_the_sample_in_the_apps_shape(cli: Any, db: Any) -> None:
    r = cli("seed", "-o", "pretty", **env(APP_MAP))
    assert r.exit_code == 0, r.stderr
    assert "not an event" not in r.stdout and "alice" in r.stdout
    docs = list(db.domain_events.find())
    assert len(docs) == 4 and all(isinstance(d["createdAt"], int) for d in docs)
    assert {d["aggregateId"] for d in docs} == {"alice", "bob"}
    assert cli("seed", **env(APP_MAP)).exit_code == 0  # again: nothing duplicated
    assert db.domain_events.count_documents({}) == 4


def test_a_sharded_mapped_log_is_remembered_by_its_canonical_key() -> None:
    """On a log sharded on the mapped stream path, the ledger reads the key from canonical
    events (`stream`, `_id`), and the printed key keeps the stored names."""
    import mongomock

    from evstream.storage import MongoStore
    from evstream.watching import Hooks, Watcher, WatchOptions

    client: Any = mongomock.MongoClient(tz_aware=True)
    fm = from_table(APP_MAP)
    store = MongoStore(client, client["unit"], "mongodb://mock", False, "mock", fieldmap=fm)
    watcher = Watcher(store, WatchOptions(), Hooks(deliver=lambda change: None))
    watcher.fields = ("aggregateId", "_id")
    assert watcher._event_fields() == ("stream", "_id")
    assert watcher.options.collection == "domain_events" and watcher.options.is_log
    doc = app_event("alice", "login", {}, T0)
    watcher.ledger.fields = watcher._event_fields()
    assert watcher.ledger.ident(fm.watched(doc)) == ["alice", doc["_id"]]


# The app's names, with versions and dates: a map the server can answer in canonical names.
RENAMED_MAP = {**APP_MAP, "collection": "renamed", "ts_unit": "date", "version": "sequence"}


@pytest.mark.parametrize(
    ("table", "server_names"),
    [(RENAMED_MAP, True), (VERSIONED_MAP, False), (APP_MAP, False), (None, False)],
)
def test_the_server_names_fields_only_where_it_gives_the_same_events(
    server_uri: str, db_name: str, db: Any, table: Any, server_names: bool
) -> None:
    settings = Settings(uri=server_uri, db=db_name, log=table)
    store = connect(settings, lambda message: None)
    try:
        fm = store.fieldmap
        assert (fm.canonical_fields() is not None) is server_names
        docs = [
            fm.build(ObjectId(), "s1", 1, "login", {"n": 1}, {"by": "app"}, T0),
            fm.build("e2", "s1", 2, "login", [1, 2], None, T0 + timedelta(seconds=1)),
            {**fm.build(7, "s2", 1, "logout", {}, {}, T0), "extra": "kept out"},
            fm.stored({"_id": 8, "stream": "s2", "type": "login"}),  # not an event: no version
        ]
        store.events.insert_many(docs)

        def read(renames: bool) -> list[list[tuple[str, Any]]]:
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(type(store), "renames_in_find", renames)
                return [list(event.items()) for event in read_log(store, None)]

        translated = read(False)
        assert sorted(str(dict(e)["_id"]) for e in translated) == sorted(
            str(doc["_id"]) for doc in docs
        )
        assert read(True) == translated  # the same fields, values, BSON types and order
        assert type(dict(translated[0])["_id"]) is ObjectId
    finally:
        store.close()
