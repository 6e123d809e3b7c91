"""Upcasters (evstream.projections.upcaster): the chain as a pure function, then what
`rebuild`, `rebuild --follow`, `watch --exec` and `watch --upcast` make of it, with the modules
in tests/projections (logins.py: a rename followed by a shape change; bad_upcaster.py: one that
moves ts; cycle_upcasters.py: a cycle of types)."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from test_rebuild import Log
from waiting import wait_for

from evstream.errors import InvalidInput
from evstream.events import event_problem
from evstream.projections import (
    Upcaster,
    Upcasters,
    UpcastFailed,
    import_module,
    known_upcasters,
    load_projection,
    upcaster,
)
from evstream.upcasting import upcasters_of

HERE = Path(__file__).parent / "projections"
LOGINS = str(HERE / "logins.py")
BAD = str(HERE / "bad_upcaster.py")
CYCLE = str(HERE / "cycle_upcasters.py")
T = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def ev(kind: str, data: dict[str, Any], version: int = 1, stream: str = "s") -> dict[str, Any]:
    return {"_id": f"{stream}-{version}", "stream": stream, "version": version, "type": kind,
            "data": data, "meta": {}, "ts": T}  # fmt: skip


def chain() -> Upcasters:
    return known_upcasters([LOGINS])


# --- the chain, as a pure function ---------------------------------------------------------------


def test_a_rename_then_a_shape_change_chain_on_an_old_event():
    up = chain()
    old = ev("user.login", {"user": "alice", "ip": "1.2.3.4"})
    new = up(old)
    assert new == {**old, "type": "login", "data": {"ip": "1.2.3.4", "username": "alice"}}
    assert old["type"] == "user.login" and "user" in old["data"]  # the stored event untouched
    middle = up(ev("login", {"user": "bob"}))  # only the shape change applies
    assert middle["data"] == {"username": "bob"}
    assert sum(up.counts.values()) == 3 and len(up.counts) == 2
    assert all(
        name.startswith(("user.login (logins.py:", "login (logins.py:")) for name in up.changes_since({})
    )


def test_an_event_no_upcaster_applies_to_is_returned_as_it_is():
    up = chain()
    current = ev("login", {"username": "carol"})
    assert up(current) is current
    other = ev("logout", {"user": "carol"})
    assert up(other) is other
    assert up.counts == {}


def test_the_types_a_projection_reads_include_those_upcast_into_them():
    proj = load_projection("logins", LOGINS)
    assert proj.types == ("login",)
    assert proj.read_types == ("login", "user.login")
    assert proj.prepare(ev("user.login", {"user": "a"}))["data"] == {"username": "a"}


def test_an_upcaster_without_to_may_return_any_type_so_its_type_is_read():
    def rename(e):
        return {**e, "type": "z"}

    up = Upcasters([Upcaster("y", rename), Upcaster("x", rename, to="q")])
    assert up.feeding(["z"]) == ("z", "y")
    assert up.feeding(["q"]) == ("q", "x", "y")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: {**e, "ts": e["ts"] + timedelta(seconds=1)}, "ts"),
        (lambda e: {**e, "stream": "other"}, "stream"),
        (lambda e: {**e, "version": 7}, "version"),
        (lambda e: {k: v for k, v in e.items() if k != "_id"}, "_id"),
    ],
)
def test_an_upcaster_that_changes_a_fixed_field_stops_naming_it_and_the_event(change, field):
    up = Upcasters([Upcaster("old", change)])
    with pytest.raises(UpcastFailed) as caught:
        up(ev("old", {}, version=3, stream="cart-9"))
    line = caught.value.line()
    for part in ("upcaster old (test_upcasting.py:", "'cart-9-3'", "'cart-9'", "version 3",
                 f"it changed {field}"):  # fmt: skip
        assert part in line, (part, line)


def test_an_upcaster_that_raises_or_returns_no_event_stops_naming_it():
    def boom(e):
        raise KeyError("user")

    for fn, needle in ((boom, "it raised KeyError: 'user'"), (lambda e: None, "NoneType, not an")):
        with pytest.raises(UpcastFailed, match=needle):
            Upcasters([Upcaster("old", fn)])(ev("old", {}))


def test_a_cycle_of_declared_types_is_refused_when_the_module_loads():
    with pytest.raises(InvalidInput, match="cycle of types: a -> b -> a"):
        import_module(CYCLE)


def test_an_upcaster_returning_its_own_type_needs_a_when():
    with pytest.raises(InvalidInput, match="returns its own type and has no when="):

        @upcaster("same", to="same")
        def _(e):
            return e


def test_a_cycle_only_met_at_run_time_stops_with_one_line():
    up = Upcasters(
        [Upcaster("a", lambda e: {**e, "type": "b"}), Upcaster("b", lambda e: {**e, "type": "a"})]
    )
    with pytest.raises(UpcastFailed, match="applied it again, a cycle") as caught:
        up(ev("a", {}))
    assert " -> " in caught.value.line()


def test_the_decorator_registers_by_module_and_once_per_definition():
    for _ in range(2):  # defined twice at one place: registered once

        @upcaster("here.old", to="here.new")
        def _(e):
            return {**e, "type": "here.new"}

    mine = [u for u in upcasters_of(__name__) if u.type == "here.old"]
    assert len(mine) == 1


# --- through the CLI -----------------------------------------------------------------------------


def expected_logins(db: Any) -> dict[str, dict[str, Any]]:
    """The logins projection folded here, apart: old names and shapes read by hand."""
    by_stream: dict[str, list[dict[str, Any]]] = {}
    for e in db.events.find():
        if event_problem(e) is None and e["type"] in ("login", "user.login"):
            by_stream.setdefault(e["stream"], []).append(e)
    out = {}
    for stream, events in by_stream.items():
        events.sort(key=lambda e: e["version"])
        users = [e["data"].get("username", e["data"].get("user")) for e in events]
        out[stream] = {"_id": stream, "count": len(events), "users": users,
                       "version": events[-1]["version"], "updated_at": events[-1]["ts"],
                       "events": len(events)}  # fmt: skip
    return out


def logins(db: Any) -> dict[str, dict[str, Any]]:
    return {d["_id"]: d for d in db.logins.find()}


def mixed(log: Log, streams: int = 4) -> None:
    """Each stream: an old-name old-shape login, a new-name old-shape one, a current one, and
    events of other types between."""
    events = []
    for n in range(streams):
        s = f"user-{n}"
        events += [
            log.event(s, "user.login", {"user": f"{s}-a"}),
            log.event(s, "page.viewed", {"path": "/"}),
            log.event(s, "login", {"user": f"{s}-b"}),
            log.event(s, "login", {"username": f"{s}-c"}),
        ]
    log.add(*events)


def run(cli: Any, *args: str, module: str = LOGINS) -> dict[str, Any]:
    result = cli("rebuild", "logins", "--module", module, *args, "-o", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_rebuilds_fold_upcast_events_full_incremental_and_dry_run(cli, db):
    log = Log(db)
    mixed(log)
    dry = run(cli, "--dry-run")
    assert sorted(dry["upcasted"].values()) == [4, 8]  # 4 renamed; 8 reshaped (4 + 4)
    assert db.logins.count_documents({}) == 0
    pretty = cli("rebuild", "logins", "--module", LOGINS, "--dry-run", "-o", "pretty")
    assert "to upcast by user.login (logins.py:" in pretty.stdout, pretty.stdout
    full = run(cli)
    assert full["applied"] == 12 and full["events"] == 12  # no page views read
    assert logins(db) == expected_logins(db)
    checkpoint = db.evstream_projections.find_one({"_id": "logins"})
    assert checkpoint["types"] == ["login", "user.login"]
    log.add(log.event("user-1", "user.login", {"user": "late"}),
            log.event("user-9", "login", {"user": "new"}))  # fmt: skip
    more = run(cli, "--incremental")
    assert more["mode"] == "incremental" and more["applied"] == 2
    assert logins(db) == expected_logins(db)
    assert list(db.events.find({"data.user": "late"}))  # the log keeps the old shape


def test_an_upcaster_breaking_the_rules_stops_the_run_and_writes_nothing(cli, db):
    log = Log(db)
    log.add(log.event("a", "tick", {}), log.event("b", "old.tick", {}))
    result = cli("rebuild", "ticks", "--module", BAD)
    assert result.exit_code == 1, result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    bad_id = db.events.find_one({"type": "old.tick"})["_id"]
    for part in ("upcaster old.tick (bad_upcaster.py:", bad_id, "stream 'b'", "it changed ts"):
        assert part in errors[0], (part, errors[0])
    assert db.ticks.count_documents({}) == 0 or "b" not in {d["_id"] for d in db.ticks.find()}
    assert db.evstream_projections.find_one({"_id": "ticks"}) is None


def test_a_module_with_a_cycle_is_refused_with_one_line(cli, db):
    result = cli("rebuild", "logins", "--module", CYCLE)
    assert result.exit_code == 2, result.stderr
    assert "cycle of types: a -> b -> a" in result.stderr and "Traceback" not in result.stderr


def test_follow_applies_upcast_events_as_they_arrive(cli, db):
    log = Log(db)
    mixed(log, streams=2)
    proc = cli.popen("rebuild", "logins", "--module", LOGINS, "--follow", "--idle-timeout", "60",
                     "-o", "json")  # fmt: skip
    try:
        wait_for(lambda: len(logins(db)) == 2, 60, "the catch-up")
        log.add(log.event("user-0", "user.login", {"user": "live"}))
        wait_for(lambda: "live" in logins(db)["user-0"]["users"], 30, "the live event upcast")
        assert logins(db) == expected_logins(db)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err


def test_watch_exec_gets_upcast_events_and_watch_output_only_with_upcast(cli, db, tmp_path):
    log = Log(db)
    log.add(log.event("u", "user.login", {"user": "alice"}), log.event("u", "logout", {}))
    plain = cli("watch", "--from", "start", "--no-follow", "-o", "json", "--module", LOGINS)
    docs = [json.loads(line)["doc"] for line in plain.stdout.splitlines()]
    assert [d["type"] for d in docs] == ["user.login", "logout"]  # exact copies
    assert docs[0]["data"] == {"user": "alice"}
    up = cli("watch", "--from", "start", "--no-follow", "-o", "json", "--upcast", "-m", LOGINS)
    docs = [json.loads(line)["doc"] for line in up.stdout.splitlines()]
    assert [d["type"] for d in docs] == ["login", "logout"], up.stderr
    assert docs[0]["data"] == {"username": "alice"}
    got = tmp_path / "got.ndjson"
    script = tmp_path / "handler.sh"
    script.write_text(f"#!/bin/sh\ncat >> {got}\n")
    script.chmod(0o755)
    result = cli("watch", "--from", "start", "--no-follow", "--checkpoint", "h", "--exec",
                 str(script), "-m", LOGINS)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    handed = [json.loads(line)["doc"] for line in got.read_text().splitlines()]
    assert [(d["type"], d["data"]) for d in handed] == [("login", {"username": "alice"}),
                                                         ("logout", {})]  # fmt: skip
