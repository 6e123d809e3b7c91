"""The storage boundary: choosing the adapter, connecting, reads on the primary, indexes, riding
out failovers. Unit tests on fakes where MongoDB behaves in ways nx-27017 cannot show; the
MongoDB-only assertions (explain plans) run where EVSTREAM_TEST_URI names a real server."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

import mongomock
import pytest
from conftest import TEST_URI, Cli
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure

from evstream.errors import ConnectionLost, ExitCode, IndexProblem, ServerUnreachable
from evstream.events import EventInput
from evstream.settings import Settings, resolve_db
from evstream.storage import (
    Appender,
    MongoStore,
    Nx27017Store,
    connect,
    ensure_indexes,
    stream_heads,
)
from evstream.storage import connection as connection_module
from evstream.storage.log import STREAM_VERSION_INDEX, append_one, index_findings


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- choosing the adapter ------------------------------------------------------------------------


class FakeAdmin:
    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.calls = 0

    def command(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


class FakeClient:
    """Stands in for MongoClient in `connect`: buildInfo answers as scripted."""

    replies: list[Any] = []

    def __init__(self, uri: str, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.admin = FakeAdmin(list(type(self).replies))
        self.mock = mongomock.MongoClient(tz_aware=True)
        self.closed = False

    def get_database(self, name: str, **kwargs: Any) -> Any:
        return self.mock.get_database(name, **kwargs)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    monkeypatch.setattr(connection_module, "MongoClient", FakeClient)
    monkeypatch.setattr(connection_module, "refused_at_once", lambda hosts, timeout: None)
    return FakeClient


MONGODB_BUILD_INFO = {"ok": 1, "version": "7.0.14", "gitVersion": "abc", "modules": []}
NX_BUILD_INFO = {"ok": 1, "version": "7.0.0", "process": "nx_27017", "pid": 1}


@pytest.mark.parametrize(
    ("reply", "adapter"),
    [(MONGODB_BUILD_INFO, MongoStore), (NX_BUILD_INFO, Nx27017Store)],
)
def test_the_adapter_comes_from_what_buildinfo_says(
    fake_client: type[FakeClient], reply: dict[str, Any], adapter: type
) -> None:
    fake_client.replies = [reply]
    store = connect(Settings(uri="mongodb://db1:27017/", db="shop"), lambda m: None)
    assert type(store) is adapter
    assert store.db.name == "shop"


def test_a_failing_buildinfo_never_makes_a_mongodb_into_nx27017(
    fake_client: type[FakeClient],
) -> None:
    """Before: any buildInfo error meant "nx-27017" for the rest of the process, so a MongoDB
    in an election got the nx-27017 workarounds. Now a failure is an error (exit 3)."""
    fake_client.replies = [AutoReconnect("primary stepped down")]
    with pytest.raises(ServerUnreachable):
        connect(Settings(uri="mongodb://db1:27017/", db="shop"), lambda m: None)


def test_waiting_for_a_primary_is_said_after_a_while(
    fake_client: type[FakeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    notices: list[str] = []
    answered = threading.Event()

    class SlowAdmin(FakeAdmin):
        def command(self, name: str, *args: Any, **kwargs: Any) -> Any:
            answered.wait(5)  # the election: no primary until the notice was given
            return MONGODB_BUILD_INFO

    monkeypatch.setattr(connection_module, "WAITING_NOTICE_S", 0.05)

    def notice(message: str) -> None:
        notices.append(message)
        if "waiting" in message:
            answered.set()

    fake_client.replies = []
    original = FakeClient.__init__

    def init(self: FakeClient, uri: str, **kwargs: Any) -> None:
        original(self, uri, **kwargs)
        self.admin = SlowAdmin([])

    monkeypatch.setattr(FakeClient, "__init__", init)
    store = connect(Settings(uri="mongodb://db1,db2,db3/?replicaSet=rs0", db="shop"), notice)
    assert type(store) is MongoStore
    assert any("waiting for the server" in n for n in notices), notices


def test_server_selection_waits_long_enough_for_an_election(fake_client: type[FakeClient]) -> None:
    fake_client.replies = [MONGODB_BUILD_INFO]
    store = connect(Settings(uri="mongodb://db1:27017/", db="shop"), lambda m: None)
    # MongoDB's documentation: a median election takes under 12 s.
    assert store.client.kwargs["serverSelectionTimeoutMS"] >= 20_000
    assert store.timeout_s >= 20


def test_the_uri_sets_its_own_server_selection_timeout(fake_client: type[FakeClient]) -> None:
    fake_client.replies = [MONGODB_BUILD_INFO]
    uri = "mongodb://db1:27017/?serverSelectionTimeoutMS=900"
    store = connect(Settings(uri=uri, db="shop"), lambda m: None)
    assert "serverSelectionTimeoutMS" not in store.client.kwargs


# --- connecting ---------------------------------------------------------------------------------


def test_a_refused_connection_fails_at_once_however_long_selection_may_wait() -> None:
    """Before: pymongo retried the refused host until server selection timed out. With a
    ten-minute timeout the command must still end (exit 3) well inside this test's deadline."""
    port = closed_port()
    proc = subprocess.run(
        [sys.executable, "-m", "evstream", "--uri", f"mongodb://127.0.0.1:{port}/", "status"],
        capture_output=True,
        text=True,
        timeout=20,
        env={"EVSTREAM_TIMEOUT_MS": "600000", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    assert proc.returncode == ExitCode.UNREACHABLE, proc.stderr
    assert "connection refused" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_reads_go_to_the_primary_whatever_the_uri_asks(server_uri: str, db_name: str) -> None:
    sep = "&" if "?" in server_uri else "?"
    uri = f"{server_uri}{sep}readPreference=secondaryPreferred"
    store = connect(Settings(uri=uri, db=db_name), lambda m: None)
    try:
        assert store.client.read_preference.mongos_mode == "secondaryPreferred"
        assert store.db.read_preference.mongos_mode == "primary"
        assert store.events.read_preference.mongos_mode == "primary"
        assert store.collection("evstream_checkpoints").read_preference.mongos_mode == "primary"
    finally:
        store.client.drop_database(db_name)
        store.close()


def test_the_uris_database_is_the_default(server_uri: str, db_name: str, client: Any) -> None:
    if TEST_URI:
        pytest.skip("builds a URI with its own database path")
    base = server_uri.split("?", 1)
    uri = base[0].rstrip("/") + f"/{db_name}" + (f"?{base[1]}" if len(base) > 1 else "")
    try:
        r = Cli(uri, "")(  # no --db, no EVSTREAM_DB
            "publish", "login", "-s", "alice", EVSTREAM_DB=""
        )
        assert r.exit_code == 0, r.stderr
        assert client[db_name].events.count_documents({"stream": "alice"}) == 1
    finally:
        client.drop_database(db_name)


@pytest.mark.parametrize(
    ("option", "uri", "expected"),
    [
        (None, "mongodb://h/shop", "shop"),
        (None, "mongodb://h/shop?replicaSet=rs0", "shop"),
        (None, "mongodb://h/?replicaSet=rs0", "evstream"),
        (None, "mongodb://h", "evstream"),
        (None, None, "evstream"),
        ("other", "mongodb://h/shop", "other"),
        ("", "mongodb://h/shop", ""),  # an empty --db is given, and refused later
    ],
)
def test_which_database(option: str | None, uri: str | None, expected: str) -> None:
    assert resolve_db(option, uri) == expected


# --- indexes ---------------------------------------------------------------------------------


class CountingStore(MongoStore):
    pass


def mock_store_with(indexes: list[tuple[list[tuple[str, int]], dict[str, Any]]]) -> MongoStore:
    client: Any = mongomock.MongoClient(tz_aware=True)
    store = CountingStore(client, client["unit"], "mongodb://mock", False, "mongomock")
    store.events.insert_one({"_id": "x"})
    for keys, options in indexes:
        store.events.create_index(keys, **options)
    return store


def test_indexes_are_listed_once_and_only_the_missing_ones_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = mock_store_with([([("stream", 1), ("version", 1)], {"unique": True, "name": "mine"})])
    created: list[Any] = []
    real = type(store.events).create_index

    def counting(self: Any, keys: Any, **kw: Any) -> Any:
        created.append(keys)
        return real(self, keys, **kw)

    monkeypatch.setattr(type(store.events), "create_index", counting)
    ensure_indexes(store)
    assert created == [[("ts", 1)]]  # the unique one exists under another name: kept
    created.clear()
    ensure_indexes(store)  # once per store
    assert created == []


def test_a_non_unique_stream_version_index_is_refused_with_the_fix() -> None:
    store = mock_store_with([([("stream", 1), ("version", 1)], {"name": "stream_version"})])
    with pytest.raises(IndexProblem) as caught:
        ensure_indexes(store)
    line = caught.value.line()
    assert caught.value.exit_code == ExitCode.UNSUPPORTED
    assert "'stream_version'" in line and "non-unique" in line
    assert 'db.events.dropIndex("stream_version")' in line


def test_index_findings_match_indexes_by_key_not_name() -> None:
    rows = [
        {"name": "_id_", "key": {"_id": 1}},
        {"name": "idx_events_stream_version", "key": {"stream": 1, "version": 1}, "unique": True},
        {"name": "idx_events_ts", "key": {"ts": 1}},
    ]
    assert index_findings(rows) == []
    missing = index_findings(rows[:1])
    assert [(spec.name, problem) for spec, problem, _ in missing] == [
        (STREAM_VERSION_INDEX, "missing"),
        ("ts_1", "missing"),
    ]


def test_an_index_conflict_is_reported_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    store = mock_store_with([])

    def conflicting(self: Any, keys: Any, **kw: Any) -> Any:
        raise OperationFailure("Index already exists with different options", code=85)

    monkeypatch.setattr(type(store.events), "create_index", conflicting)
    with pytest.raises(IndexProblem) as caught:
        ensure_indexes(store)
    assert "cannot create the index" in caught.value.line()


# --- stream heads ----------------------------------------------------------------------------


def test_stream_heads_sort_in_the_exact_reverse_of_the_index() -> None:
    """Only the index's order or its exact reverse lets MongoDB use a DISTINCT_SCAN."""
    from types import SimpleNamespace

    from evstream.fieldmap import DEFAULT

    store = SimpleNamespace(fieldmap=DEFAULT)
    pipeline = MongoStore.heads_pipeline(store, ["a", "b"])  # type: ignore[arg-type]
    sort = next(stage["$sort"] for stage in pipeline if "$sort" in stage)
    assert list(sort.items()) == [("stream", -1), ("version", -1)]
    group = next(stage["$group"] for stage in pipeline if "$group" in stage)
    assert group["version"] == {"$first": "$version"}


# --- riding out a failover -----------------------------------------------------------------------


class FlakyCollection:
    """Wraps a mongomock collection: the first inserts fail as in an election (after storing a
    prefix of the batch, as an ordered insert cut off midway does)."""

    def __init__(self, real: Any, failures: int, stored_before_failing: int = 0) -> None:
        self.real = real
        self.failures = failures
        self.stored_before_failing = stored_before_failing

    def insert_many(self, docs: list[Any], ordered: bool = True) -> Any:
        if self.failures:
            self.failures -= 1
            if self.stored_before_failing:
                self.real.insert_many(docs[: self.stored_before_failing], ordered=True)
            raise NotPrimaryError("not primary", {"code": 10107, "errmsg": "not primary"})
        return self.real.insert_many(docs, ordered=ordered)

    def insert_one(self, doc: Any) -> Any:
        if self.failures:
            self.failures -= 1
            self.real.insert_one(doc)  # it landed, but the reply was lost
            raise AutoReconnect("connection reset")
        return self.real.insert_one(doc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FlakyStore(MongoStore):
    flaky: FlakyCollection | None = None

    @property
    def events(self) -> Any:
        return self.flaky


def flaky_store(failures: int, stored_before_failing: int = 0) -> FlakyStore:
    client: Any = mongomock.MongoClient(tz_aware=True)
    store = FlakyStore(client, client["unit"], "mongodb://mock", False, "mongomock", timeout_s=5)
    store.flaky = FlakyCollection(client["unit"]["events"], failures, stored_before_failing)
    return store


def test_a_batch_rides_out_an_election_with_an_exact_account() -> None:
    store = flaky_store(failures=2, stored_before_failing=3)
    appender = Appender(store)
    result = appender.write([EventInput(type="t", stream="a", data={"n": i}) for i in range(10)])
    docs = list(store.flaky.real.find().sort("version", 1))  # type: ignore[union-attr]
    assert [d["data"]["n"] for d in docs] == list(range(10))
    assert [d["version"] for d in docs] == list(range(1, 11))
    assert appender.inserted == 10 and appender.duplicates == 0
    assert len(result.inserted) == 10


def test_a_single_append_whose_reply_was_lost_is_not_called_a_duplicate() -> None:
    store = flaky_store(failures=1)
    result = append_one(store, EventInput(type="t", stream="a", data={}))
    assert result.duplicate is False
    assert store.flaky.real.count_documents({}) == 1  # type: ignore[union-attr]


def test_a_server_that_stays_away_ends_the_batch_with_connection_lost() -> None:
    store = flaky_store(failures=10_000)
    store.timeout_s = 0.2
    with pytest.raises(ConnectionLost):
        Appender(store).write([EventInput(type="t", stream="a", data={})])


# --- what MongoDB's planner does (a real server only) -------------------------------------------


def winning_stages(plan: dict[str, Any]) -> list[str]:
    """Every stage name in an explain's winning plan (and in aggregation stages' plans)."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "stage" in node:
                names.append(str(node["stage"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan.get("queryPlanner", {}).get("winningPlan", plan))
    for stage in plan.get("stages", []):
        walk(stage.get("$cursor", {}).get("queryPlanner", {}).get("winningPlan", {}))
    return names


@pytest.mark.skipif(not TEST_URI, reason="explain plans need a real MongoDB (EVSTREAM_TEST_URI)")
def test_the_logs_queries_use_indexes_and_no_blocking_sort(db_name: str) -> None:
    assert TEST_URI is not None
    store = connect(Settings(uri=TEST_URI, db=db_name), lambda m: None)
    if isinstance(store, Nx27017Store):
        store.close()
        pytest.skip("nx-27017 has no query planner to explain (EVSTREAM_TEST_URI names one)")
    try:
        ensure_indexes(store)
        now = datetime.now(timezone.utc)
        store.events.insert_many(
            [
                {"_id": f"e{i}", "stream": f"s{i % 50}", "version": i // 50 + 1, "type": "t",
                 "data": {}, "ts": now}
                for i in range(2000)
            ]
        )  # fmt: skip
        heads = store.db.command(
            "explain",
            {"aggregate": "events", "pipeline": store.heads_pipeline(["s1", "s2"]), "cursor": {}},
            verbosity="queryPlanner",
        )
        assert "DISTINCT_SCAN" in winning_stages(heads), heads
        query = {"ts": {"$gte": now}}
        for sort in ([("ts", 1)], [("ts", -1)]):
            plan = store.events.find(query).sort(sort).explain()
            stages = winning_stages(plan)
            assert "IXSCAN" in stages and "SORT" not in stages, stages
        assert stream_heads(store, ["s1", "nope"]) == {"s1": 40, "nope": 0}
    finally:
        store.client.drop_database(db_name)
        store.close()
