"""The `sessions` projection: one session per stream, folded by the rules of the README's table
("The sessions projection"); its guarantees are docs/projections.md's. Standard library only.

It is defined with the same public API as users' own projections (`evstream.projections`), and
nothing in the engine names it. Each event type's effect is one small handler; a new event type
is one more function decorated with `@projection.on("type")`.

The fold is incremental and idempotent: `fold(more, fold(some))` equals `fold(some + more)`, and
an event at or below the state's `version` counts as already applied and is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from evstream.projections import Projection

State = dict[str, Any]

# In the order a person reads a session document.
FIELDS = (
    "name",
    "email",
    "username",
    "status",
    "login_count",
    "started_at",
    "last_login",
    "last_logout",
    "ended_at",
    "version",
    "updated_at",
    "events",
)

# Every event, of any type, counts in `events` and `version`: sessions reads every type.
projection = Projection(
    name="sessions",
    collection="sessions",
    version=1,
    types=None,
    initial={
        **dict.fromkeys(FIELDS[:9]),
        "login_count": 0,
    },
)
HANDLERS = projection.handlers


def _data(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    return data if isinstance(data, Mapping) else {}


@projection.on("session.started")
def _session_started(state: State, event: Mapping[str, Any]) -> None:
    data = _data(event)
    state["name"] = data.get("name")
    state["email"] = data.get("email")
    state["status"] = "active"
    state["started_at"] = event.get("ts")


@projection.on("login")
def _login(state: State, event: Mapping[str, Any]) -> None:
    state["username"] = _data(event).get("username")
    state["status"] = "active"
    state["login_count"] = (state["login_count"] or 0) + 1
    state["last_login"] = event.get("ts")


@projection.on("logout")
def _logout(state: State, event: Mapping[str, Any]) -> None:
    state["status"] = "signed_out"
    state["last_logout"] = event.get("ts")


@projection.on("profile.updated")
def _profile_updated(state: State, event: Mapping[str, Any]) -> None:
    data = _data(event)
    for key in ("name", "email"):
        if key in data:
            state[key] = data[key]


@projection.on("session.ended")
def _session_ended(state: State, event: Mapping[str, Any]) -> None:
    state["status"] = "ended"
    state["ended_at"] = event.get("ts")


# --- the fold as plain functions ------------------------------------------------------------------


def initial_state() -> State:
    """The state before any event: every field null, `login_count` and `events` 0."""
    fresh = projection.initial_state()
    return {name: fresh[name] for name in FIELDS}


def is_state(value: Mapping[str, Any]) -> bool:
    """Whether a mapping holds exactly the fields of a state (besides an optional `_id`)."""
    return value.keys() - {"_id"} == set(FIELDS)


def fold(events: Iterable[Mapping[str, Any]], state: Mapping[str, Any] | None = None) -> State:
    """Fold events (of one stream, in version order) onto `state`, or onto the initial state.

    One whose version is at or below the state's is already applied and is skipped. The given
    state is not modified.
    """
    base = None if state is None else {f: state.get(f) for f in FIELDS}
    folded = projection.fold(events, base)
    return {name: folded[name] for name in FIELDS}


def apply(state: State, event: Mapping[str, Any]) -> State:
    """The state after one event, as a new dict (the given state is left as it was)."""
    return fold((event,), state)
