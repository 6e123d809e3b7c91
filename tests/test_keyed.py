"""Keyed projections (tests/projections/daily.py: `daily_logins`, key ts:day; `tenants`, key
data.tenant), checked against a fold per key computed here, apart: log order across streams,
events without the key, late events, partitions by the key's hash, follow, buckets across
midnight UTC, the 16 MB limit, kill -9."""

from __future__ import annotations

import json
import os
import signal
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pymongo
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_projection_properties import store_and_client  # noqa: F401 - a fixture
from test_rebuild import Log
from waiting import wait_for

from evstream.errors import InvalidInput
from evstream.events import event_problem, part_of_stream
from evstream.projection import plan_rebuild, rebuild
from evstream.projections import Projection, load_projection
from evstream.settings import Settings
from evstream.storage import connect

HERE = Path(__file__).parent / "projections"
DAILY = str(HERE / "daily.py")
PARTS = 3


# --- the fold per key, independently ------------------------------------------------------------


def tenant_of(e: dict[str, Any]) -> Any:
    value = (e.get("data") or {}).get("tenant")
    return value if isinstance(value, str) or type(value) is int else None


def day_of(e: dict[str, Any]) -> Any:
    ts = e["ts"].astimezone(timezone.utc)
    return datetime(ts.year, ts.month, ts.day, tzinfo=timezone.utc)


def expected(db: Any, which: str, part: int | None = None) -> dict[Any, dict[str, Any]]:
    types = ("login",) if which == "daily" else ("login", "order.placed")
    key_of = day_of if which == "daily" else tenant_of
    groups: dict[Any, list[dict[str, Any]]] = {}
    for e in db.events.find():
        if event_problem(e) is None and e["type"] in types:
            key = key_of(e)
            if key is not None and (part is None or part_of_stream(key, PARTS) == part):
                groups.setdefault((type(key).__name__, key), []).append(e)
    out = {}
    for (_, key), events in groups.items():
        events.sort(key=lambda e: (e["ts"], e["stream"], e["version"]))
        if which == "daily":
            users: list[str] = []
            for e in events:
                if e["data"]["username"] not in users:
                    users.append(e["data"]["username"])
            state: dict[str, Any] = {"logins": len(events), "users": users}
        else:
            state = {
                "logins": sum(e["type"] == "login" for e in events),
                "orders": [e["data"]["amount"] for e in events if e["type"] == "order.placed"],
                "seq": [e["_id"] for e in events],
            }
        out[key] = {"_id": key, **state, "version": len(events), "updated_at": events[-1]["ts"],
                    "events": len(events)}  # fmt: skip
    return out


def stored(coll: Any, part: int | None = None) -> dict[Any, dict[str, Any]]:
    return {
        d["_id"]: d for d in coll.find() if part is None or part_of_stream(d["_id"], PARTS) == part
    }


def run(cli: Any, name: str, *args: str) -> dict[str, Any]:
    result = cli("rebuild", name, "--module", DAILY, *args, "-o", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the API ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("tenant", "not a path into the event"),
        ("data.", "not a path into the event"),
        ("ts:week", "the bucket is one of hour, day, month"),
        ("ts:", "names no bucket"),
        ("stream.x", "stream has no fields"),
        (3, "must be a dotted path"),
    ],
)
def test_a_bad_key_is_refused_naming_the_projection(key, needle):
    with pytest.raises(InvalidInput, match=needle):
        Projection(name="k", collection="k", version=1, types=["a"], key=key, initial={})


def test_a_key_value_is_a_string_an_integer_or_a_bucket_of_a_date():
    rule = load_projection("tenants", DAILY).key_rule
    assert rule is not None
    assert [rule.value({"data": {"tenant": v}}) for v in ("acme", 7, True, 1.5, None, [1])] == [
        "acme", 7, None, None, None, None,
    ]  # fmt: skip
    assert rule.value({"data": "x"}) is None and rule.value({}) is None
    hour = Projection(name="h", collection="h", version=1, types=None, key="ts:hour", initial={})
    month = Projection(name="m", collection="m", version=1, types=None, key="ts:month", initial={})
    t = datetime(2026, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
    assert hour.key_rule.value({"ts": t}) == datetime(2026, 12, 31, 23, tzinfo=timezone.utc)
    assert month.key_rule.value({"ts": t}) == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert month.key_rule.bounds(datetime(2026, 12, 1, tzinfo=timezone.utc))[1] == datetime(
        2027, 1, 1, tzinfo=timezone.utc
    )
    local = datetime(2026, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))  # 1 March, 22:30 UTC
    day = load_projection("daily_logins", DAILY).key_rule
    assert day.value({"ts": local}) == datetime(2026, 3, 1, tzinfo=timezone.utc)


# --- through the CLI ----------------------------------------------------------------------------


def test_full_and_incremental_keyed_rebuilds_with_late_events_and_no_key(cli, db):
    log = Log(db)
    t0 = datetime.now(timezone.utc) - timedelta(hours=2)
    events = []
    for i in range(30):
        tenant = ["acme", "globex", 7, None][i % 4]
        data = {"amount": i} if tenant is None else {"tenant": tenant, "amount": i}
        kind = "order.placed" if i % 3 else "login"
        events.append(log.event(f"s{i % 5}", kind, data, ts=t0 + timedelta(seconds=i)))
    events.append(log.event("s9", "page.viewed", {"tenant": "acme"}, ts=t0))
    log.add(*events)
    report = run(cli, "tenants")
    assert report["key"] == "data.tenant" and report["keys"] == 3
    assert report["without_key"] == 7 and report["applied"] == 23
    assert stored(db.tenants) == expected(db, "tenants")
    # Late: a ts older than everything applied to its key, published after the run.
    log.add(log.event("s1", "login", {"tenant": "acme"}, ts=t0 + timedelta(minutes=50)))
    log.add(log.event("s2", "order.placed", {"tenant": "acme", "amount": 99},
                      ts=datetime.now(timezone.utc) - timedelta(seconds=1)))  # fmt: skip
    log.add(log.event("s3", "login", {"tenant": "initech"}))
    more = run(cli, "tenants", "--incremental")
    assert more["mode"] == "incremental", more
    assert stored(db.tenants) == expected(db, "tenants")
    log.add(log.event("s4", "login", {"tenant": "globex"}, ts=t0 - timedelta(hours=5)))
    behind = run(cli, "tenants", "--incremental")  # behind the checkpoint: the count sees it
    assert behind["mode"] == "full" and "full_because" in behind
    assert stored(db.tenants) == expected(db, "tenants")
    dry = run(cli, "tenants", "--dry-run")
    assert dry["dry_run"] and dry["written"] == 0 and dry["unchanged"] == 4
    db.events.delete_many({"data.tenant": 7})  # a key the log no longer holds: its document goes
    gone = run(cli, "tenants")
    assert gone["removed"] == 1 and 7 not in stored(db.tenants)
    assert stored(db.tenants) == expected(db, "tenants")
    pretty = cli("rebuild", "tenants", "--module", DAILY, "-o", "pretty")
    assert "Rebuilt tenants (full)" in pretty.stdout and "3 keys" in pretty.stdout, pretty.stdout
    assert "without the key" in pretty.stdout
    status = cli("status", "-o", "json")
    assert status.exit_code == 0, status.stderr
    assert '"tenants"' in status.stdout


def test_a_bucket_key_across_midnight_utc(cli, db):
    log = Log(db)
    before = datetime(2026, 3, 1, 23, 59, 59, 999000, tzinfo=timezone.utc)
    after = datetime(2026, 3, 2, 0, 0, 0, 0, tzinfo=timezone.utc)
    local = datetime(2026, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # 23:30 UTC, 1st
    log.add(
        log.event("alice", "login", {"username": "alice"}, ts=before),
        log.event("bob", "login", {"username": "bob"}, ts=after),
        log.event("carol", "login", {"username": "carol"}, ts=local),
        log.event("bob", "login", {"username": "bob"}, ts=after + timedelta(hours=23, minutes=59)),
    )
    report = run(cli, "daily_logins")
    assert report["keys"] == 2
    docs = stored(db.daily_logins)
    first, second = (
        datetime(2026, 3, 1, tzinfo=timezone.utc),
        datetime(2026, 3, 2, tzinfo=timezone.utc),
    )
    assert sorted(docs) == [first, second]
    assert docs[first]["logins"] == 2 and docs[first]["users"] == ["carol", "alice"]
    assert docs[second]["logins"] == 2 and docs[second]["users"] == ["bob"]
    assert docs == expected(db, "daily")


def test_partitions_by_the_keys_hash_together_give_the_full_rebuild(cli, db):
    log = Log(db)
    log.add(*(log.event(f"s{i % 7}", "login", {"tenant": f"t{i % 11}"}) for i in range(60)))
    for part in range(1, PARTS + 1):
        report = run(cli, "tenants", "--partition", f"{part}/{PARTS}")
        assert report["partition"] == f"{part}/{PARTS}"
        assert stored(db.tenants, part) == expected(db, "tenants", part)
    assert stored(db.tenants) == expected(db, "tenants")


def test_follow_refolds_the_key_of_each_event_as_it_arrives(cli, db):
    log = Log(db)
    log.add(*(log.event(f"s{i}", "login", {"tenant": "acme"}) for i in range(3)))
    proc = cli.popen("rebuild", "tenants", "--module", DAILY, "--follow", "--idle-timeout", "60",
                     "-o", "json")  # fmt: skip
    try:
        wait_for(lambda: stored(db.tenants).get("acme", {}).get("logins") == 3, 60, "catch-up")
        log.add(log.event("s1", "login", {"tenant": "globex"}))
        late = datetime.now(timezone.utc) - timedelta(seconds=5)
        log.add(log.event("s2", "order.placed", {"tenant": "acme", "amount": 5}, ts=late))
        wait_for(lambda: stored(db.tenants) == expected(db, "tenants"), 30, "live events")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert db.evstream_projections.find_one({"_id": "tenants"})["key"] == "data.tenant"


def test_a_document_over_16_mb_stops_the_run_naming_the_key(cli, db, tmp_path):
    module = tmp_path / "big.py"
    module.write_text(
        "from evstream.projections import Projection\n"
        "big = Projection(name='big', collection='big', version=1, types=['blob'],\n"
        "                 key='data.k', initial={'parts': []})\n"
        "@big.on('blob')\n"
        "def _(state, event):\n"
        "    state['parts'].append('x' * 3_000_000)\n"
    )
    log = Log(db)
    log.add(log.event("a", "blob", {"k": "small"}),
            *(log.event(f"b{i}", "blob", {"k": "huge"}) for i in range(6)))  # fmt: skip
    result = cli("rebuild", "big", "--module", str(module))
    assert result.exit_code == 1, result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "'huge'" in errors[0] and "16 MB" in errors[0], result.stderr
    assert db.big.find_one({"_id": "huge"}) is None
    assert db.evstream_projections.find_one({"_id": "big"}) is None


def test_kill_9_during_a_keyed_rebuild_then_a_run_makes_it_exact(cli, db):
    log = Log(db)
    t0 = datetime.now(timezone.utc) - timedelta(days=3)
    log.add(*(log.event(f"s{i % 50}", "login", {"tenant": f"t{i % 400}", "username": "u"},
                        ts=t0 + timedelta(seconds=i)) for i in range(4000)))  # fmt: skip
    for mode in ([], ["--incremental"]):
        proc = cli.popen("rebuild", "tenants", "--module", DAILY, "--batch-size", "10", *mode)
        wait_for(lambda p=proc: db.tenants.count_documents({}) > 0 or p.poll() is not None, 60,
                 "the first documents")  # fmt: skip
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for doc in db.tenants.find():  # whole documents, each a fold of a prefix or the whole
            assert set(doc) == {"_id", "logins", "orders", "seq", "version", "updated_at",
                                "events"}  # fmt: skip
        log.add(log.event("s1", "login", {"tenant": "t1"}))
        run(cli, "tenants", "--incremental")
        assert stored(db.tenants) == expected(db, "tenants")


def test_kill_9_while_following_a_keyed_projection_loses_nothing(cli, db):
    log = Log(db)
    log.add(*(log.event(f"s{i}", "login", {"tenant": f"t{i % 3}"}) for i in range(9)))
    for _ in range(2):
        proc = cli.popen("rebuild", "tenants", "--module", DAILY, "--follow", "--idle-timeout",
                         "60", "-o", "json")  # fmt: skip
        try:
            wait_for(lambda: stored(db.tenants) == expected(db, "tenants"), 60, "caught up")
            log.add(log.event("s1", "login", {"tenant": "t1"}),
                    log.event("s2", "login", {"tenant": "t-new"}))  # fmt: skip
            wait_for(lambda: "t-new" in stored(db.tenants) or False, 30, "a live event")
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        log.add(log.event("s3", "login", {"tenant": "t2"}))  # while nobody follows
    run(cli, "tenants", "--incremental")
    assert stored(db.tenants) == expected(db, "tenants")


# --- property: any interleaving gives the fold per key -------------------------------------------

TENANTS = ["acme", "globex", 7, None]
LAGS = [0.0, 0.0, 0.3, 2.0, 40.0, 3600.0, 86400.0]

publish = st.tuples(
    st.just("publish"),
    st.lists(
        st.tuples(
            st.sampled_from([f"s{i}" for i in range(5)]),
            st.sampled_from(["login", "order.placed", "page.viewed"]),
            st.sampled_from(TENANTS),
            st.sampled_from(LAGS),
        ),
        min_size=1,
        max_size=6,
    ),
)
runs = st.tuples(
    st.sampled_from(["full", "incremental", "incremental", "follow"]),
    st.sampled_from([None, None, 1, 2, 3]),
    st.sampled_from([0.0, 1.0, 30.0]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(history=st.lists(st.one_of(publish, runs), min_size=2, max_size=10))
@example(  # new events of a key already folded, then one late (older than the key's last)
    history=[
        ("publish", [("s0", "login", "acme", 0.0), ("s1", "login", "acme", 0.0)]),
        ("incremental", None, 1.0),
        ("publish", [("s1", "login", "acme", 0.0), ("s2", "order.placed", 7, 0.0)]),
        ("incremental", 2, 0.0),
        ("publish", [("s3", "login", "acme", 0.3), ("s4", "login", "globex", 40.0)]),
        ("follow", None, 30.0),
        ("incremental", None, 0.0),
        ("full", 1, 0.0),
    ]
)
def test_any_interleaving_gives_the_fold_per_key(store_and_client, history):  # noqa: F811
    from evstream.projection import Follower

    store, client = store_and_client
    name = f"keyed_{uuid.uuid4().hex[:12]}"
    db = client[name]
    store.db = store.client.get_database(name, read_preference=store.db.read_preference)
    tenants = load_projection("tenants", DAILY)
    daily = load_projection("daily_logins", DAILY)
    log = Log(db)
    try:
        for op in history:
            if op[0] == "publish":
                now = datetime.now(timezone.utc)
                log.add(*(
                    log.event(stream, kind, {"amount": n, "username": stream,
                                             **({} if tenant is None else {"tenant": tenant})},
                              ts=now - timedelta(seconds=lag))
                    for n, (stream, kind, tenant, lag) in enumerate(op[1])
                ))  # fmt: skip
                continue
            mode, part, margin = op
            parts = None if part is None else (part, PARTS)
            for proj, which, coll in (
                (tenants, "tenants", db.tenants),
                (daily, "daily", db.daily_logins),
            ):
                if mode == "follow":
                    # What a follower does with each event it is handed, then its checkpoint.
                    follower = Follower(store, proj, part=parts, margin=margin)
                    for e in db.events.find().sort("ts", -1).limit(4):
                        follower._deliver(_insert(e, store.log_name))
                    follower.catch_up()
                else:
                    plan = plan_rebuild(store, proj, incremental=mode == "incremental",
                                        margin=margin, part=parts)  # fmt: skip
                    rebuild(store, plan, batch_size=3)
                assert stored(coll, part) == expected(db, which, part), (mode, part, which)
        for proj, which, coll in (
            (tenants, "tenants", db.tenants),
            (daily, "daily", db.daily_logins),
        ):
            for part in range(1, PARTS + 1):
                rebuild(store, plan_rebuild(store, proj, incremental=True, part=(part, PARTS)))
            rebuild(store, plan_rebuild(store, proj, incremental=True))
            assert stored(coll) == expected(db, which)
    finally:
        client.drop_database(name)


def _insert(doc: dict[str, Any], log: str) -> Any:
    from evstream.watching import Change

    return Change(op="insert", collection=log, key={"_id": doc["_id"]}, doc=doc)


# --- an application's log: mapped names, epoch ms ts, no versions ---------------------------------


def test_keyed_runs_on_an_apps_log_without_versions_fold_in_ts_id_order(server_uri):
    from bson import ObjectId
    from test_adopting import APP_MAP

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server_uri, tz_aware=True)
    name = f"keyed_app_{uuid.uuid4().hex[:10]}"
    store = connect(Settings(uri=server_uri, db=name, log=APP_MAP), lambda message: None)
    db = client[name]
    tenants = load_projection("tenants", DAILY)

    def expected_app() -> dict[Any, Any]:
        groups: dict[Any, list[dict[str, Any]]] = {}
        for e in db.domain_events.find():
            tenant = e["payload"].get("tenant")
            if e["eventType"] in ("login", "order.placed") and tenant is not None:
                groups.setdefault(tenant, []).append(e)
        out = {}
        for key, events in groups.items():
            events.sort(key=lambda e: (e["createdAt"], e["_id"]))
            at = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(
                milliseconds=events[-1]["createdAt"]
            )
            out[key] = {"_id": key, "logins": sum(e["eventType"] == "login" for e in events),
                        "orders": [e["payload"]["amount"] for e in events
                                   if e["eventType"] == "order.placed"],
                        "seq": [e["_id"] for e in events], "version": len(events),
                        "updated_at": at, "events": len(events)}  # fmt: skip
        return out

    def insert(tenant: str, kind: str, at_ms: int, amount: int = 1) -> None:
        db.domain_events.insert_one({"_id": ObjectId(), "aggregateId": f"a{amount % 3}",
                                     "eventType": kind, "createdAt": at_ms,
                                     "payload": {"tenant": tenant, "amount": amount}})  # fmt: skip

    try:
        now = int(datetime.now(timezone.utc).timestamp() * 1000)
        for i in range(12):
            insert(["acme", "globex"][i % 2], ["login", "order.placed"][i % 3 == 0], now - 60_000 + i
                   * 1000 if i != 5 else now - 59_000, i)  # fmt: skip
        rebuild(store, plan_rebuild(store, tenants, incremental=False))
        assert stored(db.tenants) == expected_app()
        insert("acme", "order.placed", now - 5_000, 50)  # older than acme's last: late
        insert("initech", "login", now, 51)
        plan = plan_rebuild(store, tenants, incremental=True, margin=30.0)
        assert plan.mode == "incremental", plan.reason
        rebuild(store, plan)
        assert stored(db.tenants) == expected_app()
    finally:
        store.close()
        client.drop_database(name)
        client.close()
