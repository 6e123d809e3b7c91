"""Upcasters: functions from a canonical event to a canonical event, for events whose shape
changed (a type renamed, a field renamed or moved). Public API: `evstream.projections.upcaster`.

    from evstream.projections import upcaster

    @upcaster("user.login", to="login")          # old events of type user.login
    def _(event):
        return {**event, "type": "login"}

    @upcaster("login", when=lambda e: "user" in e["data"])   # an old shape of the same type
    def _(event):
        data = {k: v for k, v in event["data"].items() if k != "user"}
        return {**event, "data": {**data, "username": event["data"]["user"]}}

The rules (docs/projections.md, "Upcasting"): an event's upcasters are those registered for its
type, tried in the order they were registered; the first whose `when` holds (or that has none)
is applied, and the chain starts again from the result's type, until none applies. An upcaster
is applied at most once to an event: one met again is a cycle and stops the run. A cycle of
declared types (`to=`) is refused when the module loads. An upcaster may not change `_id`,
`stream`, `version` or `ts`; one that does stops the run with one line naming it and the event.

Standard library only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evstream.errors import EvstreamError, InvalidInput

Event = Mapping[str, Any]
UpcastFn = Callable[[Event], Event]
Predicate = Callable[[Event], bool]

# The fields that place an event in the log: an upcaster keeps them as they are.
FIXED = ("_id", "stream", "version", "ts")
# A chain longer than this is a cycle whatever the predicates say (each upcaster applies once).
MAX_CHAIN = 64
_GONE = object()  # a fixed field the result lacks (or the event did)


class UpcastFailed(EvstreamError):
    """An upcaster raised, returned something that is not an event, broke the rules or looped:
    the run stops (exit 1), naming the upcaster and the event."""


@dataclass(frozen=True, eq=False)
class Upcaster:
    """One registered upcaster: the stored type it reads, an optional predicate, the type it
    declares it returns (`to`, optional: it lets a cycle be refused when the module loads)."""

    type: str
    fn: UpcastFn
    when: Predicate | None = None
    to: str | None = None

    @functools.cached_property
    def name(self) -> str:
        """How a message names it: its type, and its function's file and line."""
        code = getattr(self.fn, "__code__", None)
        where = (
            f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
            if code is not None
            else getattr(self.fn, "__qualname__", repr(self.fn))
        )
        return f"{self.type} ({where})"

    def position(self) -> tuple[Any, ...]:
        """Where it is defined: a module executed again registers it again, in its place."""
        code = getattr(self.fn, "__code__", None)
        if code is None:
            return (self.type, id(self.fn))
        return (self.type, code.co_filename, code.co_firstlineno)


# Upcasters by the module that defines them (the function's __module__), in registration order.
_REGISTERED: dict[str, list[Upcaster]] = {}


def upcaster(
    event_type: str, *, when: Predicate | None = None, to: str | None = None
) -> Callable[[UpcastFn], UpcastFn]:
    """Register the decorated function as an upcaster of events of `event_type`.

    `when` picks an old shape (the upcaster applies only where it holds); `to` declares the type
    it returns, so a cycle of types is refused here, when the module loads.
    """
    if not isinstance(event_type, str) or not event_type:
        raise InvalidInput(f"an upcaster's type must be a non-empty string, not {event_type!r}")
    if to is not None and (not isinstance(to, str) or not to):
        raise InvalidInput(f"upcaster of {event_type!r}: to= must be a type name, not {to!r}")
    if when is not None and not callable(when):
        raise InvalidInput(f"upcaster of {event_type!r}: when= must be a function of the event")

    def register(fn: UpcastFn) -> UpcastFn:
        if not callable(fn):
            raise InvalidInput(f"upcaster of {event_type!r}: {fn!r} is not a function")
        found = Upcaster(event_type, fn, when, to)
        module = getattr(fn, "__module__", None) or "__main__"
        listed = [u for u in _REGISTERED.get(module, []) if u.position() != found.position()]
        check_cycles([*listed, found])
        listed.append(found)
        _REGISTERED[module] = listed
        return fn

    return register


def upcasters_of(module_name: str) -> list[Upcaster]:
    """The upcasters a module registered, in order."""
    return list(_REGISTERED.get(module_name, []))


def check_cycles(upcasters: Iterable[Upcaster]) -> None:
    """Refuse (InvalidInput) upcasters whose declared types form a cycle, and one without `when`
    that declares it returns its own type (it would apply to its own result)."""
    edges: dict[str, set[str]] = {}
    for up in upcasters:
        if up.to is None:
            continue
        if up.to == up.type and up.when is None:
            raise InvalidInput(
                f"upcaster {up.name} returns its own type and has no when=: it would apply to "
                "its own result forever",
                hint="give it a when= that its result no longer meets",
            )
        if up.to != up.type:
            edges.setdefault(up.type, set()).add(up.to)
    done: set[str] = set()
    for start in sorted(edges):
        _visit(start, edges, [], done)


def _visit(node: str, edges: Mapping[str, set[str]], path: list[str], done: set[str]) -> None:
    """Depth first from `node`; a node met again on the current path closes a cycle."""
    if node in path:
        cycle = [*path[path.index(node) :], node]
        raise InvalidInput(
            f"upcasters form a cycle of types: {' -> '.join(cycle)}",
            hint="an upcaster turns old shapes into newer ones; none may lead back",
        )
    if node in done:
        return
    path.append(node)
    for nxt in sorted(edges.get(node, ())):
        _visit(nxt, edges, path, done)
    path.pop()
    done.add(node)


class Upcasters:
    """The upcasters in force (those of every loaded module), applied as a chain.

    Calling it upcasts one canonical event; an event of a type without upcasters is returned as
    it is (one dict lookup). `counts` says how many events each upcaster changed
    (`changes_since` by name).
    """

    def __init__(self, upcasters: Iterable[Upcaster] = ()) -> None:
        listed = list(dict.fromkeys(upcasters))
        check_cycles(listed)
        self.listed = listed
        by_type: dict[str, list[Upcaster]] = {}
        for up in listed:
            by_type.setdefault(up.type, []).append(up)
        self.by_type: dict[str, tuple[Upcaster, ...]] = {t: tuple(u) for t, u in by_type.items()}
        self.counts: dict[Upcaster, int] = {}  # events each upcaster changed

    def __bool__(self) -> bool:
        return bool(self.listed)

    def __len__(self) -> int:
        return len(self.listed)

    @property
    def sources(self) -> frozenset[str]:
        """The stored types some upcaster reads."""
        return frozenset(self.by_type)

    def feeding(self, types: Iterable[str]) -> tuple[str, ...]:
        """`types`, then every type some upcaster chain may turn into one of them: the types a
        projection of `types` reads from the log. An upcaster without `to` may return any type,
        so its type is read (and what it returns is kept only if it is one of `types`)."""
        wanted = list(dict.fromkeys(types))
        reach = set(wanted)
        changed = True
        while changed:
            changed = False
            for up in self.listed:
                if up.type in reach:
                    continue
                if up.to is None or up.to in reach:
                    reach.add(up.type)
                    changed = True
        return (*wanted, *sorted(reach - set(wanted)))

    def __call__(self, event: Event) -> Event:
        """The event upcast: the chain applied until no upcaster applies."""
        chain = self.by_type.get(event.get("type"))  # type: ignore[arg-type]
        if chain is None:
            return event
        up = chain[0]
        if up.when is not None:
            return self._chain(event, chain)
        # The common case inline (a rename, a reshape without a predicate): one call fewer.
        try:
            result = up.fn(event)
        except Exception as exc:
            raise self._failure(up, event, f"it raised {_exc(exc)}") from exc
        if type(result) is not dict:
            return self._chain(event, chain)  # the general path says what is wrong
        get, was = result.get, event.get
        if not (
            get("ts") is was("ts")
            and get("_id") is was("_id")
            and get("stream") is was("stream")
            and get("version") is was("version")
        ):
            self._check_fixed(up, event, event, result)
        kind = get("type")
        if type(kind) is not str:
            raise self._failure(up, event, f"it returned a type of {kind!r}, not a name")
        counts = self.counts
        counts[up] = counts.get(up, 0) + 1
        found = self.by_type.get(kind)
        if found is None:
            return result
        return self._chain(result, found, event, [up])

    def _chain(
        self,
        event: Event,
        chain: tuple[Upcaster, ...],
        original: Event | None = None,
        applied: list[Upcaster] | None = None,
    ) -> Event:
        original = event if original is None else original
        applied = [] if applied is None else applied
        counts = self.counts
        while True:
            for up in chain:
                when = up.when
                if when is not None:
                    try:
                        if not when(event):
                            continue
                    except Exception as exc:
                        raise self._failure(up, original, f"its when= raised {_exc(exc)}") from exc
                if applied and (up in applied or len(applied) >= MAX_CHAIN):
                    steps = " -> ".join(u.name for u in [*applied, up])
                    raise self._failure(
                        up,
                        original,
                        f"the chain applied it again, a cycle ({steps})",
                        hint="each upcaster must turn the event into a shape it no longer matches",
                    )
                try:
                    result = up.fn(event)
                except Exception as exc:
                    raise self._failure(up, original, f"it raised {_exc(exc)}") from exc
                if type(result) is not dict and not isinstance(result, Mapping):
                    raise self._failure(
                        up, original, f"it returned {type(result).__name__}, not an event"
                    )
                get, was = result.get, event.get
                # The same objects when the upcaster copied them ({**event, ...}): no comparison.
                if not (
                    get("ts") is was("ts")
                    and get("_id") is was("_id")
                    and get("stream") is was("stream")
                    and get("version") is was("version")
                ):
                    self._check_fixed(up, original, event, result)
                applied.append(up)
                counts[up] = counts.get(up, 0) + 1
                event = result
                break
            else:
                return event
            kind = event.get("type")
            if type(kind) is not str:
                raise self._failure(up, original, f"it returned a type of {kind!r}, not a name")
            found = self.by_type.get(kind)
            if found is None:
                return event
            chain = found

    def _check_fixed(self, up: Upcaster, original: Event, event: Event, result: Event) -> None:
        """Stop (UpcastFailed) when `result` changed one of `event`'s fixed fields."""
        changed = [f for f in FIXED if result.get(f, _GONE) != event.get(f, _GONE)]
        if changed:
            raise self._failure(
                up,
                original,
                f"it changed {', '.join(changed)} (an upcaster may not change _id, stream, "
                "version or ts)",
            )

    @staticmethod
    def _failure(up: Upcaster, event: Event, why: str, *, hint: str | None = None) -> UpcastFailed:
        return UpcastFailed(
            f"upcaster {up.name} on event _id {event.get('_id')!r} (stream "
            f"{event.get('stream')!r}, version {event.get('version')!r}, type "
            f"{event.get('type')!r}): {why}",
            hint=hint or "nothing of that event was written; --debug shows the traceback",
        )

    def changes_since(self, before: Mapping[Upcaster, int]) -> dict[str, int]:
        """How many events each upcaster changed since `before` (a copy of `counts`), by name."""
        return {
            up.name: n - before.get(up, 0)
            for up, n in sorted(self.counts.items(), key=lambda item: item[0].name)
            if n - before.get(up, 0)
        }


def _exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


NO_UPCASTERS = Upcasters()
