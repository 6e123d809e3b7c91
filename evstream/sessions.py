"""The sessions fold: one stream's events, in version order, to a session. Standard library only.

The rules are DESIGN.md's table. A state is a plain dict of `FIELDS`; the projection stores it as
the session document (with `_id` = the stream). Each event type's effect is one small handler in
`HANDLERS`, so a new event type is one more function decorated with `@handles("type")` (and a
new field of the session, one more name in `FIELDS`).

The fold is incremental and idempotent: `fold(more, fold(some))` equals `fold(some + more)`, and
an event at or below the state's `version` counts as already applied and is ignored, so folding
an overlapping run of events again changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

State = dict[str, Any]
Handler = Callable[[State, Mapping[str, Any], Any], None]

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

HANDLERS: dict[str, Handler] = {}


def handles(event_type: str) -> Callable[[Handler], Handler]:
    """Register a handler: what an event of `event_type` does to a state, in place."""

    def register(handler: Handler) -> Handler:
        HANDLERS[event_type] = handler
        return handler

    return register


def initial_state() -> State:
    """The state before any event: every field null, `login_count` and `events` 0."""
    state: State = dict.fromkeys(FIELDS)
    state["login_count"] = 0
    state["events"] = 0
    return state


def is_state(value: Mapping[str, Any]) -> bool:
    """Whether a mapping holds exactly the fields of a state (besides an optional `_id`)."""
    return value.keys() - {"_id"} == set(FIELDS)


def apply(state: State, event: Mapping[str, Any]) -> State:
    """The state after one event, as a new dict (the given state is left as it was)."""
    return fold((event,), state)


def fold(events: Iterable[Mapping[str, Any]], state: Mapping[str, Any] | None = None) -> State:
    """Fold events (of one stream, in version order) onto `state`, or onto the initial state.

    Events need `type`, `version`, `ts` and `data`. One whose version is at or below the state's
    is already applied and is skipped. The given state is not modified.
    """
    current: State = initial_state() if state is None else {f: state.get(f) for f in FIELDS}
    handlers = HANDLERS
    for event in events:
        version = event.get("version")
        applied = current["version"]
        if version is not None and applied is not None and version <= applied:
            continue
        data = event.get("data")
        ts = event.get("ts")
        handler = handlers.get(event.get("type"))  # type: ignore[arg-type]
        if handler is not None:
            handler(current, data if isinstance(data, Mapping) else {}, ts)
        current["version"] = version
        current["updated_at"] = ts
        current["events"] = (current["events"] or 0) + 1
    return current


# --- the table of DESIGN.md -------------------------------------------------------------------


@handles("session.started")
def _session_started(state: State, data: Mapping[str, Any], ts: datetime | None) -> None:
    state["name"] = data.get("name")
    state["email"] = data.get("email")
    state["status"] = "active"
    state["started_at"] = ts


@handles("login")
def _login(state: State, data: Mapping[str, Any], ts: datetime | None) -> None:
    state["username"] = data.get("username")
    state["status"] = "active"
    state["login_count"] = (state["login_count"] or 0) + 1
    state["last_login"] = ts


@handles("logout")
def _logout(state: State, data: Mapping[str, Any], ts: datetime | None) -> None:
    state["status"] = "signed_out"
    state["last_logout"] = ts


@handles("profile.updated")
def _profile_updated(state: State, data: Mapping[str, Any], ts: datetime | None) -> None:
    for key in ("name", "email"):
        if key in data:
            state[key] = data[key]


@handles("session.ended")
def _session_ended(state: State, data: Mapping[str, Any], ts: datetime | None) -> None:
    state["status"] = "ended"
    state["ended_at"] = ts
