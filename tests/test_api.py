"""The Python API (docs/python-api.md): every call of `evstream.connect()`'s client, its errors
(evstream's own, with the CLI's exit codes; never a driver exception), threads, and typing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import evstream
from evstream.client import Client

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def api(server_uri: str, db_name: str, db: Any) -> Iterator[Client]:
    """A client on this test's database (which `db` drops afterwards)."""
    with evstream.connect(server_uri, db_name) as client:
        yield client


def login(user: str, n: int = 0) -> dict[str, Any]:
    return {"type": "login", "stream": user, "data": {"username": user, "n": n}}


# --- connecting ------------------------------------------------------------------------------


def test_import_evstream_loads_no_driver_until_connect_is_used() -> None:
    code = (
        "import sys, evstream\n"
        "assert 'pymongo' not in sys.modules\n"
        "evstream.Conflict, evstream.InvalidInput, evstream.connect\n"
        "assert 'pymongo' not in sys.modules, 'connect itself loads the driver only when called'\n"
        "assert evstream.Conflict is evstream.ConcurrencyConflict\n"
        "assert evstream.Conflict.exit_code == 5 and evstream.InvalidInput.exit_code == 2\n"
        "assert evstream.ServerUnreachable.exit_code == 3\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        evstream.nothing  # type: ignore[attr-defined]  # noqa: B018


def test_connect_without_uri_uses_the_environment(
    server_uri: str, db_name: str, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVSTREAM_URI", server_uri)
    monkeypatch.setenv("EVSTREAM_DB", db_name)
    with evstream.connect() as log:
        assert log.database == db_name
        log.append("login", "alice")
    assert db.events.count_documents({}) == 1


def test_connect_without_any_uri_starts_the_embedded_dev_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVSTREAM_HOME", str(tmp_path / "home"))
    log = evstream.connect(db="devstore")
    try:
        assert "embedded dev store" in log.description
        assert log.append("login", "alice")["version"] == 1
        assert [e["stream"] for e in log.read()] == ["alice"]
    finally:
        log.close()
        subprocess.run(
            [sys.executable, "-m", "evstream", "server", "stop"],
            env={**os.environ, "EVSTREAM_HOME": str(tmp_path / "home")},
            capture_output=True,
            timeout=60,
        )


@pytest.mark.parametrize(
    ("uri", "db", "error", "code"),
    [
        ("mongodb://127.0.0.1:1/", "x", evstream.ServerUnreachable, 3),
        ("mongodb://a:b:c@/", "x", evstream.InvalidInput, 2),
        ("http://example.com", "x", evstream.InvalidInput, 2),
        (None, "bad.name", evstream.InvalidInput, 2),
    ],
)
def test_connect_errors_are_evstreams_own_with_exit_codes(
    server_uri: str, uri: str | None, db: str, error: type[Exception], code: int
) -> None:
    with pytest.raises(error) as caught:
        evstream.connect(uri or server_uri, db)
    assert isinstance(caught.value, evstream.Error)
    assert caught.value.exit_code == code


@pytest.mark.parametrize(
    ("uri", "db", "env", "expected"),
    [
        (None, None, {}, (None, "evstream")),
        (None, None, {"MONGODB_URI": "mongodb://m/shop"}, ("mongodb://m/shop", "shop")),
        (None, None, {"EVSTREAM_URI": "mongodb://e/", "MONGODB_URI": "mongodb://m/"},
         ("mongodb://e/", "evstream")),  # fmt: skip
        (None, None, {"EVSTREAM_URI": "mongodb://e/a", "EVSTREAM_DB": "b"}, ("mongodb://e/a", "b")),
        ("mongodb://given/x", "y", {"EVSTREAM_URI": "mongodb://e/", "EVSTREAM_DB": "b"},
         ("mongodb://given/x", "y")),  # fmt: skip
    ],
)
def test_settings_resolve_as_the_clis(
    uri: str | None, db: str | None, env: dict[str, str], expected: tuple[str | None, str]
) -> None:
    from evstream.settings import resolve_settings

    settings = resolve_settings(uri, db, env=env)
    assert (settings.uri, settings.db) == expected


def test_a_context_is_resolved_in_one_place(server_uri: str) -> None:
    # Resolved by evstream.settings.resolve_settings, as the CLI's --context (docs/configuration.md).
    with pytest.raises(evstream.InvalidInput, match="no context named 'prod'") as caught:
        evstream.connect(context="prod")
    assert caught.value.exit_code == 2


def test_a_closed_client_refuses_calls(server_uri: str, db_name: str, db: Any) -> None:
    log = evstream.connect(server_uri, db_name)
    log.close()
    log.close()  # twice is fine
    with pytest.raises(evstream.InvalidInput, match="closed"):
        log.append("login", "alice")


# --- append ----------------------------------------------------------------------------------


def test_append_returns_the_stored_event(api: Client, db: Any) -> None:
    first = api.append("login", "alice", {"username": "alice"}, meta={"source": "web"})
    second = api.append("logout", "alice")
    assert (first["stream"], first["version"], first["type"]) == ("alice", 1, "login")
    assert first["data"] == {"username": "alice"} and first["meta"] == {"source": "web"}
    assert isinstance(first["ts"], datetime) and first["ts"].tzinfo is not None
    assert second["version"] == 2 and second["data"] == {}
    stored = db.events.find_one({"_id": first["_id"]})
    assert stored["version"] == 1 and stored["meta"] == {"source": "web"}


def test_append_with_expected_version(api: Client, db: Any) -> None:
    assert api.append("login", "alice", expected_version=0)["version"] == 1
    assert api.append("login", "alice", expected_version=1)["version"] == 2
    with pytest.raises(evstream.Conflict, match="at version 2, not the expected version 1") as c:
        api.append("login", "alice", expected_version=1)
    assert c.value.exit_code == 5
    assert db.events.count_documents({}) == 2


def test_append_with_an_id_stores_it_once(api: Client, db: Any) -> None:
    one = api.append("login", "alice", {"n": 1}, id="evt-1")
    again = api.append("login", "alice", {"n": 2}, id="evt-1")
    assert again == one
    assert db.events.count_documents({}) == 1


def test_append_redacts_secrets_unless_kept(api: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="evstream"):
        stored = api.append("signup", "carol", {"password": "hunter2", "name": "Carol"})
    assert stored["data"]["password"] != "hunter2" and stored["data"]["name"] == "Carol"
    assert "redacted data.password" in caplog.text
    kept = api.append("signup", "dave", {"password": "hunter2"}, keep_secrets=True)
    assert kept["data"]["password"] == "hunter2"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("", "alice"), {}, "type"),
        (("login", ""), {}, "stream"),
        (("login", "$alice"), {}, "stream"),
        (("login", "alice", [1, 2]), {}, "data"),
        (("login", "alice"), {"expected_version": -1}, "expected_version"),
        (("login", "alice"), {"meta": "x"}, "meta"),
    ],
)
def test_bad_input_is_invalid_input_and_nothing_is_written(
    api: Client, db: Any, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(evstream.InvalidInput, match=message) as caught:
        api.append(*args, **kwargs)
    assert caught.value.exit_code == 2
    assert db.events.count_documents({}) == 0


# --- append_many -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{1, 2}, object()])
def test_a_value_bson_cannot_hold_is_evstreams_error_not_the_drivers(
    api: Client, db: Any, value: Any
) -> None:
    with pytest.raises(evstream.Error, match="could not encode") as caught:
        api.append("login", "alice", {"bad": value})
    assert type(caught.value).__module__.startswith("evstream")
    assert db.events.count_documents({}) == 0


def test_append_many_returns_publish_files_summary(api: Client, db: Any, cli: Any) -> None:
    summary = api.append_many([login(f"u{i % 3}", i) for i in range(10)])
    assert {k: summary[k] for k in ("published", "duplicates", "skipped", "read")} == {
        "published": 10,
        "duplicates": 0,
        "skipped": 0,
        "read": 10,
    }
    assert set(summary) == set(json.loads(cli("publish", "--file", "-", input="").stdout))
    versions = {s: [e["version"] for e in db.events.find({"stream": s}).sort("version")]
                for s in ("u0", "u1", "u2")}  # fmt: skip
    assert versions == {"u0": [1, 2, 3, 4], "u1": [1, 2, 3], "u2": [1, 2, 3]}


def test_append_many_ids_are_idempotency_keys(api: Client, db: Any) -> None:
    events = [{**login("alice", i), "id": f"e{i}"} for i in range(5)]
    assert api.append_many(events)["published"] == 5
    again = api.append_many(events)
    assert (again["published"], again["duplicates"]) == (0, 5)
    assert db.events.count_documents({}) == 5


def test_a_bad_item_in_a_list_writes_nothing(api: Client, db: Any) -> None:
    events = [login("alice"), {"type": "login"}, login("bob"), {"stream": "x", "type": ""}]
    with pytest.raises(evstream.InvalidInput, match=r"line 2: .*1 more invalid.*nothing was") as c:
        api.append_many(events)
    assert c.value.exit_code == 2
    assert db.events.count_documents({}) == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"name": "\ud800"}, "line 1501: data.name holds a lone UTF-16 surrogate"),
        ({"blob": "x" * (16 * 1024 * 1024)}, "line 1501: event is 16.0 MB"),
    ],
)
def test_an_item_no_document_can_hold_is_refused_before_anything_is_written(
    api: Client, db: Any, data: dict[str, Any], reason: str
) -> None:
    """As `publish --file` refuses its line: not the driver's error, after a batch or more was
    written (nx-27017 would even store a document over 16 MB)."""
    events = [login(f"u{i % 7}", i) for i in range(1500)] + [{**login("bob"), "data": data}]
    with pytest.raises(evstream.InvalidInput) as caught:
        api.append_many(events)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(reason) and "nothing was written" in str(caught.value)
    assert db.events.count_documents({}) == 0


def test_a_bad_item_in_a_generator_stops_there_saying_what_was_stored(api: Client, db: Any) -> None:
    def events() -> Iterator[dict[str, Any]]:
        yield from (login("alice", i) for i in range(3))
        yield {"type": "login", "stream": "bob", "data": "not an object"}
        yield login("carol")

    with pytest.raises(evstream.InvalidInput, match="line 4: .*3 event.s. before it were stored"):
        api.append_many(events())
    assert db.events.count_documents({}) == 3


def test_append_many_skip_invalid(api: Client, db: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="evstream"):
        summary = api.append_many([login("a"), {"type": "x"}, login("b")], skip_invalid=True)
    assert (summary["published"], summary["skipped"]) == (2, 1)
    assert "skipped line 2" in caplog.text


def test_append_many_from_code_gives_no_warning_about_missing_ids(
    api: Client, db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Events without ids are the usual case from code: the file path's "has no id" warning
    (a re-run of an input would store them twice) is for inputs, not for calls."""
    with caplog.at_level("WARNING"):
        report = api.append_many([{"type": "login", "stream": f"u{i}"} for i in range(3)])
    assert report["published"] == 3 and db.events.count_documents({}) == 3
    assert not [r for r in caplog.records if "has no id" in r.getMessage()]


def test_append_many_expected_version_conflict(api: Client, db: Any) -> None:
    api.append("login", "alice")
    batch = [login("bob"), {**login("alice"), "expected_version": 0}]
    with pytest.raises(evstream.Conflict, match="alice"):
        api.append_many(batch)


# A log another application wrote without per-stream versions (docs/adopting.md).
NO_VERSIONS_MAP = {"collection": "domain_events", "stream": "aggregateId", "version": False}


@pytest.fixture
def unversioned(
    server_uri: str, db_name: str, db: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Client]:
    """A client on a mapped log with `version = false`, holding one event of the app's."""
    monkeypatch.setenv("EVSTREAM_LOG_MAP", json.dumps(NO_VERSIONS_MAP))
    db.domain_events.insert_one(
        {"aggregateId": "alice", "type": "login", "data": {}, "ts": datetime.now(timezone.utc)}
    )
    with evstream.connect(server_uri, db_name) as client:
        yield client


def test_expected_version_on_a_log_without_versions_is_refused_as_the_cli_refuses_it(
    unversioned: Client, db: Any, cli: Any, tmp_path: Path
) -> None:
    """An expected version on a log without versions: exit 4 (FeatureUnsupported) with the
    CLI's one message, from `append` as from `publish --expected-version`, and from
    `append_many` as from `publish --file`: a list as a file (nothing written), a generator as
    standard input (what came before is stored, and said)."""
    mapped = {"EVSTREAM_LOG_MAP": json.dumps(NO_VERSIONS_MAP)}

    def said(r: Any) -> str:
        assert r.exit_code == 4, r.stderr
        [line] = [x for x in r.stderr.splitlines() if "version = false" in x]
        return line.removeprefix("error: ")

    def refused(call: Any) -> str:
        with pytest.raises(evstream.FeatureUnsupported) as caught:
            call()
        assert caught.value.exit_code == 4
        return caught.value.line()

    def stored() -> int:
        return db.domain_events.count_documents({})

    cli_said = said(cli("publish", "login", "-s", "alice", "--expected-version", "1", **mapped))
    assert refused(lambda: unversioned.append("login", "alice", expected_version=1)) == cli_said
    assert "nothing was written" in cli_said and stored() == 1

    events = [login("carol"), {**login("bob"), "expected_version": 0}]
    text = "".join(json.dumps(e) + "\n" for e in events)
    (tmp_path / "in.ndjson").write_text(text)
    cli_said = said(cli("publish", "--file", str(tmp_path / "in.ndjson"), **mapped))
    assert cli_said.startswith("line 2: ") and "nothing was written" in cli_said
    assert refused(lambda: unversioned.append_many(events)) == cli_said
    assert stored() == 1

    cli_said = said(cli("publish", "--file", "-", input=text, **mapped))
    assert cli_said.startswith("line 2: ") and "1 event(s) before it were stored" in cli_said
    assert stored() == 2
    assert refused(lambda: unversioned.append_many(iter(events))) == cli_said
    assert stored() == 3

    unversioned.append("login", "alice")
    assert unversioned.append_many([login("bob"), login("carol")])["published"] == 2
    assert stored() == 6


def test_append_many_reads_a_generator_as_it_comes(api: Client, db: Any) -> None:
    taken = []

    def events() -> Iterator[dict[str, Any]]:
        for i in range(2500):
            taken.append(i)
            yield login(f"s{i % 7}", i)

    assert api.append_many(events())["published"] == 2500
    assert len(taken) == 2500 and db.events.count_documents({}) == 2500


# --- read ------------------------------------------------------------------------------------


def test_read_in_log_order_with_filters(api: Client, db: Any) -> None:
    t0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
    db.events.insert_many(
        [
            {
                "_id": f"e{i}",
                "stream": "ab"[i % 2],
                "version": i // 2 + 1,
                "type": "login" if i % 3 else "logout",
                "data": {},
                "ts": t0 + timedelta(minutes=i),
            }
            for i in range(12)
        ]  # fmt: skip
    )
    everything = api.read()
    assert isinstance(everything, Iterator)
    assert [e["_id"] for e in everything] == [f"e{i}" for i in range(12)]
    assert [e["_id"] for e in api.read(stream="b")] == [f"e{i}" for i in range(1, 12, 2)]
    assert [e["_id"] for e in api.read(types="logout")] == ["e0", "e3", "e6", "e9"]
    assert [e["_id"] for e in api.read(types=["logout"], stream="a")] == ["e0", "e6"]
    since = t0 + timedelta(minutes=9)
    assert [e["_id"] for e in api.read(since=since)] == ["e9", "e10", "e11"]
    assert [e["_id"] for e in api.read(since="2024-05-01T00:10:00Z")] == ["e10", "e11"]
    with pytest.raises(evstream.InvalidInput):
        api.read(since="yesterday")


def test_read_streams_a_large_log_lazily(api: Client, db: Any) -> None:
    api.append_many([login(f"s{i % 50}", i) for i in range(3000)])
    reader = api.read()
    first = next(reader)
    assert first["data"]["n"] == 0
    assert sum(1 for _ in reader) == 2999


# --- follow ----------------------------------------------------------------------------------


def test_follow_from_start_then_live(api: Client, server_uri: str, db_name: str) -> None:
    api.append_many([login("alice", i) for i in range(3)])
    seen = []
    with api.follow(start="start", idle_timeout=20) as changes:
        for change in changes:
            seen.append(change.doc["data"]["n"] if change.doc else None)
            if len(seen) == 3:
                # Live: appended by another client while following.
                with evstream.connect(server_uri, db_name) as other:
                    other.append("login", "bob", {"n": 3})
            if len(seen) == 4:
                break
    assert seen == [0, 1, 2, 3]
    assert change.op == "insert" and change.collection == "events" and change.when is not None


def test_follow_with_types_and_streams(api: Client) -> None:
    api.append_many([login("alice"), {"type": "logout", "stream": "alice"}, login("bob")])
    got = [
        (c.doc or {})["stream"]
        for c in api.follow(start="start", streams="alice", types=["login"], idle_timeout=0.5)
    ]
    assert got == ["alice"]


def test_follow_saves_a_change_when_the_next_is_asked_for(api: Client) -> None:
    api.append_many([{**login("alice", i), "id": f"e{i}"} for i in range(6)])
    first = api.follow(checkpoint="mailer", start="start")
    assert [next(first).doc["_id"] for _ in range(3)] == ["e0", "e1", "e2"]  # type: ignore[index]
    first.close()  # closing: the change held (e2) counts as handled
    second = api.follow(checkpoint="mailer", idle_timeout=0.5)
    held = next(second)
    assert held.doc and held.doc["_id"] == "e3"
    del second  # dropped without close(): e3 was not handled, and comes again
    third = api.follow(checkpoint="mailer", idle_timeout=0.5)
    assert [c.doc["_id"] for c in third] == ["e3", "e4", "e5"]  # type: ignore[index]


def test_an_exception_while_handling_a_change_delivers_it_again(api: Client) -> None:
    api.append_many([{**login("alice", i), "id": f"e{i}"} for i in range(3)])
    with pytest.raises(RuntimeError), api.follow(checkpoint="c", start="start") as changes:
        for change in changes:
            if change.doc and change.doc["_id"] == "e1":
                raise RuntimeError("handler failed")
    again = [c.doc["_id"] for c in api.follow(checkpoint="c", idle_timeout=0.5)]  # type: ignore[index]
    assert again == ["e1", "e2"]


def test_follow_is_a_generator_whose_throw_leaves_the_change_unhandled(api: Client) -> None:
    import collections.abc

    api.append_many([{**login("alice", i), "id": f"e{i}"} for i in range(2)])
    changes = api.follow(checkpoint="g", start="start")
    assert isinstance(changes, collections.abc.Generator)
    assert next(changes).doc["_id"] == "e0"  # type: ignore[index]
    with pytest.raises(KeyError):
        changes.throw(KeyError("stop"))
    with pytest.raises(StopIteration):
        next(changes)
    assert [c.doc["_id"] for c in api.follow(checkpoint="g", idle_timeout=0.5)] == ["e0", "e1"]  # type: ignore[index]


def test_partitions_share_the_streams(api: Client) -> None:
    api.append_many([login(f"user{i % 20}", i) for i in range(100)])
    parts = []
    for i in (1, 2, 3):
        follow = api.follow(checkpoint="p", start="start", partition=f"{i}/3", idle_timeout=0.5)
        parts.append({(c.doc or {})["stream"] for c in follow})
    assert set().union(*parts) == {f"user{i}" for i in range(20)}
    assert sum(len(p) for p in parts) == 20  # each stream in one part
    with pytest.raises(evstream.InvalidInput, match="part"):
        api.follow(checkpoint="p", partition="1/2")
    with pytest.raises(evstream.InvalidInput, match="checkpoint"):
        api.follow(partition=(1, 2))
    with pytest.raises(evstream.InvalidInput, match="partition"):
        api.follow(checkpoint="q", partition="3/2")


def test_follow_refuses_a_bad_start(api: Client) -> None:
    with pytest.raises(evstream.InvalidInput, match="--from"):
        api.follow(start="tomorrow-ish")


# --- rebuild, check, status ------------------------------------------------------------------


def test_rebuild_sessions(api: Client, db: Any, cli: Any) -> None:
    api.append_many([login("alice"), login("alice"), login("bob")])
    dry = api.rebuild("sessions", dry_run=True)
    assert dry["dry_run"] is True and db.sessions.count_documents({}) == 0
    full = api.rebuild("sessions")
    assert (full["mode"], full["created"], full["applied"]) == ("full", 2, 3)
    assert db.sessions.find_one({"_id": "alice"})["login_count"] == 2
    api.append("login", "alice")
    more = api.rebuild("sessions", incremental=True)
    assert more["mode"] == "incremental" and more["applied"] == 1
    assert db.sessions.find_one({"_id": "alice"})["login_count"] == 3
    cli_report = json.loads(cli("rebuild", "sessions", "-i", "-o", "json").stdout)
    assert set(cli_report) == set(more)


def test_rebuild_a_projection_object_by_partition(api: Client, db: Any) -> None:
    from evstream.projections import Projection

    counts = Projection(name="counts", collection="counts", version=1, types=["login"],
                        initial={"n": 0})  # fmt: skip

    @counts.on("login")
    def _(state: dict[str, Any], event: dict[str, Any]) -> None:
        state["n"] += 1

    api.append_many([login(f"user{i % 10}") for i in range(30)])
    one = api.rebuild(counts, partition="1/2")
    two = api.rebuild(counts, partition=(2, 2))
    assert one["streams"] + two["streams"] == 10
    assert {d["_id"]: d["n"] for d in db.counts.find()} == {f"user{i}": 3 for i in range(10)}
    with pytest.raises(evstream.InvalidInput, match="no projection named 'nope'"):
        api.rebuild("nope")


def test_a_failing_handler_is_handler_failed(api: Client) -> None:
    from evstream.projections import Projection

    broken = Projection(name="broken", collection="broken", version=1, types=["login"], initial={})

    @broken.on("login")
    def _(state: dict[str, Any], event: dict[str, Any]) -> None:
        raise ValueError("boom")

    api.append("login", "alice")
    with pytest.raises(evstream.HandlerFailed, match="boom"):
        api.rebuild(broken)


def test_check_and_status_are_the_json_of_the_commands(api: Client, cli: Any, db: Any) -> None:
    api.append_many([login("alice"), login("bob")])
    db.events.insert_one({"_id": "foreign", "stream": 7})  # a document evstream did not write
    report = api.check()
    assert report["healthy"] is False
    from_cli = json.loads(cli("check", "-o", "json").stdout)
    assert {k: v for k, v in report.items() if k != "seconds"} == {
        k: v for k, v in from_cli.items() if k != "seconds"
    }
    status = api.status()
    status_cli = json.loads(cli("status", "-o", "json").stdout)
    assert set(status) == set(status_cli)
    assert status["counts"]["events"] == status_cli["counts"]["events"] == 2
    assert status["database"] == db.name


# --- threads ---------------------------------------------------------------------------------


def test_eight_threads_appending_with_expected_version_exactly_one_wins_each(
    api: Client, db: Any
) -> None:
    threads, versions = 8, 25
    barrier = threading.Barrier(threads)
    wins: dict[int, list[int]] = {v: [] for v in range(versions)}
    errors: list[BaseException] = []

    def writer(me: int) -> None:
        try:
            for v in range(versions):
                barrier.wait(timeout=60)  # all eight race for the same version
                try:
                    api.append("claim", "race", {"by": me}, expected_version=v)
                    wins[v].append(me)
                except evstream.Conflict:
                    pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            barrier.abort()

    pool = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors
    assert all(len(winners) == 1 for winners in wins.values()), wins
    stored = list(db.events.find({"stream": "race"}).sort("version"))
    assert [e["version"] for e in stored] == list(range(1, versions + 1))
    assert [e["data"]["by"] for e in stored] == [wins[v][0] for v in range(versions)]


def test_threads_share_one_client_for_every_call(api: Client, db: Any) -> None:
    errors: list[BaseException] = []

    def work(me: int) -> None:
        try:
            api.append_many([login(f"t{me}", i) for i in range(200)])
            for i in range(20):
                api.append("logout", f"t{me}", {"i": i})
            assert sum(1 for _ in api.read(stream=f"t{me}")) == 220
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors
    for me in range(6):
        versions = [e["version"] for e in db.events.find({"stream": f"t{me}"}).sort("version")]
        assert versions == list(range(1, 221))


# --- typing ----------------------------------------------------------------------------------

USER_SCRIPT = """
from __future__ import annotations

from datetime import datetime

import evstream
from evstream.projections import Projection


def publish(log: evstream.Client) -> int:
    try:
        event = log.append("login", "alice", {"username": "alice"}, expected_version=0)
    except evstream.Conflict as exc:
        code: int = exc.exit_code
        return code
    version: int = event["version"]
    summary = log.append_many([{"type": "login", "stream": "bob"}])
    published: int = summary["published"]
    return version + published


def consume(log: evstream.Client) -> list[str]:
    seen: list[str] = []
    for change in log.follow(checkpoint="mailer", start="start", idle_timeout=1.0):
        when: datetime | None = change.when
        if change.doc is not None and when is not None:
            seen.append(str(change.doc["stream"]))
    for event in log.read(stream="alice", types=["login"]):
        seen.append(str(event["_id"]))
    return seen


def main() -> None:
    counts = Projection(name="counts", collection="counts", version=1, types=["login"], initial={"n": 0})
    with evstream.connect("mongodb://localhost", "shop") as log:
        publish(log)
        consume(log)
        report = log.rebuild(counts, incremental=True)
        healthy: bool = log.check()["healthy"]
        print(report["mode"], healthy, log.status()["counts"])
"""


def mypy_strict(script: Path) -> subprocess.CompletedProcess[str]:
    """mypy --strict on a user's script, evstream found from its directory as installed (an
    editable install is a finder that mypy cannot follow); evstream's own findings are not
    the user's."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-incremental",
            "--python-version",
            "3.10",
            str(script),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        cwd=script.parent,
        timeout=600,
    )


def test_mypy_strict_passes_on_a_users_script(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    assert (ROOT / "evstream" / "py.typed").is_file()
    script = tmp_path / "user.py"
    script.write_text(USER_SCRIPT)
    result = mypy_strict(script)
    assert result.returncode == 0, result.stdout + result.stderr
    # A mistake is caught, so the check can fail.
    script.write_text(USER_SCRIPT + "\nx: str = evstream.connect().append('a', 'b')['v']\n"
                      "y: int = evstream.connect().check()\n")  # fmt: skip
    bad = mypy_strict(script)
    assert bad.returncode == 1 and "Incompatible types in assignment" in bad.stdout, bad.stdout
    assert bad.stdout.count("error:") == 1, bad.stdout


def test_the_package_ships_py_typed() -> None:
    tomllib = pytest.importorskip("tomllib")

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["evstream"]
