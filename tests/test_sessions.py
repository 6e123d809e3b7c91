"""The sessions fold: the sessions table (README, "The data model"), event by event and in sequences, and its invariants."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evstream import sessions
from evstream.sessions import FIELDS, apply, fold, initial_state

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def ev(version: int, etype: str, data: Any = None, minutes: int | None = None) -> dict[str, Any]:
    ts = T0 + timedelta(minutes=version if minutes is None else minutes)
    return {"stream": "alice", "version": version, "type": etype, "data": data or {}, "ts": ts}


def at(version: int) -> datetime:
    return T0 + timedelta(minutes=version)


def test_initial_state_is_all_null_but_counters():
    state = initial_state()
    assert list(state) == list(FIELDS)
    assert state["login_count"] == 0 and state["events"] == 0
    assert all(state[f] is None for f in FIELDS if f not in ("login_count", "events"))
    assert fold([]) == state


@pytest.mark.parametrize(
    ("event", "changes"),
    [
        (
            ev(1, "session.started", {"name": "Alice", "email": "a@example.com"}),
            {"name": "Alice", "email": "a@example.com", "status": "active", "started_at": at(1)},
        ),
        (
            ev(1, "session.started", {"name": "Alice"}),
            {"name": "Alice", "email": None, "status": "active", "started_at": at(1)},
        ),
        (
            ev(1, "login", {"username": "al", "method": "sso"}),
            {"username": "al", "status": "active", "login_count": 1, "last_login": at(1)},
        ),
        (ev(1, "logout", {"reason": "user"}), {"status": "signed_out", "last_logout": at(1)}),
        (ev(1, "profile.updated", {"name": "Alice B."}), {"name": "Alice B."}),
        (ev(1, "profile.updated", {"email": "b@example.com"}), {"email": "b@example.com"}),
        (
            ev(1, "profile.updated", {"name": "A", "email": "e", "username": "ignored"}),
            {"name": "A", "email": "e"},
        ),
        (ev(1, "profile.updated", {}), {}),
        (ev(1, "session.ended"), {"status": "ended", "ended_at": at(1)}),
        (ev(1, "page.viewed", {"path": "/", "name": "not a profile"}), {}),
        (ev(1, "Login", {"username": "case matters"}), {}),
    ],
)
def test_each_event_type_on_a_new_session(event, changes):
    expected = initial_state() | changes
    expected |= {"version": 1, "updated_at": at(1), "events": 1}
    assert apply(initial_state(), event) == expected


def test_a_whole_session_in_order():
    events = [
        ev(1, "session.started", {"name": "Alice", "email": "a@example.com"}),
        ev(2, "login", {"username": "alice"}),
        ev(3, "page.viewed", {"path": "/docs"}),
        ev(4, "profile.updated", {"email": "alice@example.org"}),
        ev(5, "logout"),
        ev(6, "login", {"username": "alice2"}),
        ev(7, "session.ended"),
    ]
    assert fold(events) == {
        "name": "Alice",
        "email": "alice@example.org",
        "username": "alice2",
        "status": "ended",
        "login_count": 2,
        "started_at": at(1),
        "last_login": at(6),
        "last_logout": at(5),
        "ended_at": at(7),
        "version": 7,
        "updated_at": at(7),
        "events": 7,
    }


@pytest.mark.parametrize(
    ("types", "status"),
    [
        (["login", "logout"], "signed_out"),
        (["logout", "login"], "active"),
        (["session.ended", "login"], "active"),
        (["login", "session.ended"], "ended"),
        (["session.started", "logout"], "signed_out"),
        (["logout", "session.started"], "active"),
        (["logout", "page.viewed"], "signed_out"),
        (["page.viewed"], None),
    ],
)
def test_order_decides_the_status(types, status):
    assert fold([ev(i, t) for i, t in enumerate(types, 1)])["status"] == status


def test_profile_update_before_start_is_overwritten_by_start():
    state = fold(
        [
            ev(1, "profile.updated", {"name": "Early"}),
            ev(2, "session.started", {"name": "Alice", "email": "a@x"}),
            ev(3, "profile.updated", {"name": "Late"}),
        ]
    )
    assert (state["name"], state["email"]) == ("Late", "a@x")


def test_timestamps_come_from_the_events_not_their_order():
    state = fold([ev(1, "login", minutes=50), ev(2, "login", minutes=10)])
    assert state["last_login"] == at(10) and state["updated_at"] == at(10)


@pytest.mark.parametrize("data", [None, [], "text", 3])
def test_data_that_is_not_an_object_counts_as_empty(data):
    state = fold([{**ev(1, "login"), "data": data}])
    assert state["username"] is None and state["login_count"] == 1


def test_events_at_or_below_the_state_version_are_already_applied():
    first = fold([ev(1, "login"), ev(2, "login")])
    again = fold([ev(1, "login"), ev(2, "login"), ev(3, "logout")], first)
    assert again["login_count"] == 2 and again["events"] == 3 and again["version"] == 3


def test_fold_does_not_modify_its_inputs():
    state = fold([ev(1, "login", {"username": "a"})])
    before = copy.deepcopy(state)
    event = ev(2, "login", {"username": "b"})
    event_before = copy.deepcopy(event)
    fold([event], state)
    assert state == before and event == event_before


def test_a_state_read_back_from_the_store_continues():
    stored = {"_id": "alice", **fold([ev(1, "login")])}
    state = fold([ev(2, "login")], stored)
    assert "_id" not in state and state["login_count"] == 2
    assert sessions.is_state(stored) and not sessions.is_state({"_id": "x", "version": 1})


def test_a_new_event_type_is_one_handler(monkeypatch):
    monkeypatch.setattr(sessions.projection, "handlers", dict(sessions.projection.handlers))

    @sessions.projection.on("account.locked")
    def _locked(state, event):
        state["status"] = "locked"

    state = fold([ev(1, "login"), ev(2, "account.locked", {"reason": "fraud"})])
    assert state["status"] == "locked" and state["login_count"] == 1
    assert state["events"] == 2 and state["version"] == 2


def test_sessions_is_defined_with_the_public_api():
    from evstream.projections import Projection

    assert isinstance(sessions.projection, Projection)
    assert (sessions.projection.name, sessions.projection.collection) == ("sessions", "sessions")
    assert sessions.projection.types is None  # every event counts in `events` and `version`
    assert set(sessions.projection.handlers) == {
        "session.started",
        "login",
        "logout",
        "profile.updated",
        "session.ended",
    }


# --- properties ----------------------------------------------------------------------------------

TYPES = ["session.started", "login", "logout", "profile.updated", "session.ended", "page.viewed"]
datas = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["Ada", "Grace", None]),
        "email": st.sampled_from(["a@x", "b@y"]),
        "username": st.text(max_size=3),
    },
)


@st.composite
def streams(draw: Any) -> list[dict[str, Any]]:
    """A stream's events in version order, with arbitrary (even decreasing) timestamps."""
    kinds = draw(st.lists(st.sampled_from(TYPES), max_size=25))
    return [
        ev(v, kind, draw(datas), minutes=draw(st.integers(0, 10_000)))
        for v, kind in enumerate(kinds, 1)
    ]


@settings(max_examples=300, deadline=None)
@given(streams(), st.data())
def test_folding_in_two_parts_equals_folding_whole(events, data):
    cut = data.draw(st.integers(0, len(events)))
    assert fold(events[cut:], fold(events[:cut])) == fold(events)


@settings(max_examples=200, deadline=None)
@given(streams(), st.data())
def test_folding_in_many_parts_equals_folding_whole(events, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=5)))
    state = None
    for start, end in zip([0, *cuts], [*cuts, len(events)], strict=True):
        state = fold(events[start:end], state)
    assert state == fold(events)


@settings(max_examples=200, deadline=None)
@given(streams(), st.data())
def test_re_applying_an_overlap_changes_nothing(events, data):
    cut = data.draw(st.integers(0, len(events)))
    back = data.draw(st.integers(0, cut))
    assert fold(events[back:], fold(events[:cut])) == fold(events)


@settings(max_examples=200, deadline=None)
@given(streams())
def test_counters_and_version_follow_the_events(events):
    state = fold(events)
    assert state["events"] == len(events)
    assert state["version"] == (len(events) or None)
    assert state["login_count"] == sum(e["type"] == "login" for e in events)
    assert list(state) == list(FIELDS)
