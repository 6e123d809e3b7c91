"""Projections, the public API: a read model folded from the log, one document per stream.

    from evstream.projections import Projection

    carts = Projection(name="carts", collection="carts", version=1,
                       types=["cart.created", "cart.item_added"],
                       initial={"items": [], "total": 0})

    @carts.on("cart.item_added")
    def _(state, event):
        state["items"].append(event["data"]["sku"])

Standard library only. The engine that rebuilds a projection in MongoDB is `evstream.projection`;
its guarantees are in docs/projections.md. Loading user modules (`--module`,
`EVSTREAM_PROJECTIONS`) is `load_projection`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from evstream.errors import EvstreamError, InvalidInput
from evstream.upcasting import (
    NO_UPCASTERS,
    Upcaster,
    Upcasters,
    UpcastFailed,
    upcaster,
    upcasters_of,
)

__all__ = [
    "HandlerFailed",
    "Projection",
    "UpcastFailed",
    "Upcaster",
    "Upcasters",
    "load_projection",
    "load_upcasters",
    "upcaster",
]

State = dict[str, Any]
Event = Mapping[str, Any]
Handler = Callable[[State, Event], None]

# Fields the engine keeps on every document, beside the fold's own (docs/projections.md).
BOOKKEEPING = ("version", "updated_at", "events")
BUILTIN_MODULES = ("evstream.sessions",)
ENV_VAR = "EVSTREAM_PROJECTIONS"
RESERVED_COLLECTIONS = ("events",)


class HandlerFailed(EvstreamError):
    """A projection's handler raised: the run stops (exit 1), naming the event and the error."""


@dataclass(eq=False)
class Projection:
    """A read model: its name, collection, fold version, the event types it reads, its initial
    state, and one handler `(state, event) -> None` per type it changes state for.

    `types=None` reads every type (as `sessions` does: every event counts in `events`).
    """

    name: str
    collection: str
    version: int
    types: Iterable[str] | None
    initial: Mapping[str, Any]
    handlers: dict[str, Handler] = field(default_factory=dict, repr=False)
    # The upcasters its events go through before a handler sees them (docs/projections.md,
    # "Upcasting"): `load_projection` gives those of every loaded module.
    upcasters: Upcasters = field(default=NO_UPCASTERS, repr=False)
    # One document per value of this path (a keyed projection, docs/projections.md "Keyed
    # projections"); None: one document per stream.
    key: str | None = None
    key_rule: KeyRule | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidInput(f"a projection's name must be a non-empty string, not {self.name!r}")
        if (
            not isinstance(self.collection, str)
            or not self.collection
            or self.collection.startswith(("$", "system.", "evstream_"))
            or self.collection in RESERVED_COLLECTIONS
            or "\x00" in self.collection
        ):
            raise InvalidInput(
                f"projection {self.name!r}: {self.collection!r} cannot be its collection "
                "(not events, system.* or evstream_*)"
            )
        if type(self.version) is not int or self.version < 1:
            raise InvalidInput(f"projection {self.name!r}: version must be an integer from 1")
        if self.types is not None:
            types = list(self.types)
            if not types or any(not isinstance(t, str) or not t for t in types):
                raise InvalidInput(
                    f"projection {self.name!r}: types must be a non-empty list of type names"
                )
            self.types = tuple(dict.fromkeys(types))
        clash = set(self.initial) & {"_id", *BOOKKEEPING}
        if clash:
            raise InvalidInput(
                f"projection {self.name!r}: initial cannot hold {', '.join(sorted(clash))} "
                "(the engine keeps them)"
            )
        self.initial = dict(self.initial)
        if not isinstance(self.upcasters, Upcasters):
            self.upcasters = Upcasters(self.upcasters)
        self.key_rule = None if self.key is None else KeyRule.parse(self.name, self.key)

    @property
    def read_types(self) -> tuple[str, ...] | None:
        """The stored types its runs read: its own, and those its upcasters turn into one of
        them (None: every type)."""
        if self.types is None:
            return None
        if not self.upcasters:
            return self.types  # type: ignore[return-value]
        return self.upcasters.feeding(self.types)

    def prepare(self, event: Event) -> Event | None:
        """The event as its handlers see it: upcast, or None when, upcast, it is not one of the
        projection's types (UpcastFailed when an upcaster breaks the rules)."""
        upcasters = self.upcasters
        if not upcasters:
            return event
        event = upcasters(event)
        types = self.types
        if types is not None and event["type"] not in types:  # type: ignore[operator]
            return None
        return event

    def on(self, event_type: str) -> Callable[[Handler], Handler]:
        """Register the handler for one of the projection's event types."""
        if self.types is not None and event_type not in self.types:
            raise InvalidInput(f"projection {self.name!r}: {event_type!r} is not one of its types")

        def register(handler: Handler) -> Handler:
            self.handlers[event_type] = handler
            return handler

        return register

    @property
    def fields(self) -> frozenset[str]:
        """The keys of a stored state (besides `_id`)."""
        return frozenset(self.initial) | frozenset(BOOKKEEPING)

    def initial_state(self) -> State:
        """A fresh state: a copy of `initial`, no events applied."""
        state = _clone(self.initial)
        state.update(version=None, updated_at=None, events=0)
        return state

    def is_state(self, doc: Mapping[str, Any]) -> bool:
        """Whether a stored document has exactly this fold's shape, so a run may continue it."""
        return (
            doc.keys() - {"_id"} == self.fields
            and type(doc.get("version")) is int
            and type(doc.get("events")) is int
        )

    def fold_keyed(self, events: Iterable[Event], state: State | None = None) -> State:
        """Fold a key's events (in log order, upcast) onto `state` (changed in place) or the
        initial state: `version` and `events` count the events applied, `updated_at` is the
        last one's ts."""
        current = self.initial_state() if state is None else state
        handlers = self.handlers
        applied = current["events"]
        for event in events:
            handler = handlers.get(event.get("type"))  # type: ignore[arg-type]
            if handler is not None:
                self._handle(handler, current, event)
            applied += 1
            current["updated_at"] = event.get("ts")
        current["events"] = current["version"] = applied
        return current

    def fold(self, events: Iterable[Event], state: Mapping[str, Any] | None = None) -> State:
        """Fold one stream's events (in version order) onto a copy of `state` or the initial one.

        An event at or below the state's `version` counts as applied and is skipped. A handler
        that raises stops the fold with `HandlerFailed`, naming the event.
        """
        current = self.initial_state() if state is None else _clone(dict(state))
        current.pop("_id", None)
        handlers = self.handlers
        for event in events:
            version = event.get("version")
            applied = current.get("version")
            if applied is not None and version is not None and version <= applied:
                continue
            handler = handlers.get(event.get("type"))  # type: ignore[arg-type]
            if handler is not None:
                self._handle(handler, current, event)
            current["version"] = version
            current["updated_at"] = event.get("ts")
            current["events"] = (current.get("events") or 0) + 1
        return current

    def _handle(self, handler: Handler, state: State, event: Event) -> None:
        """Run a handler; one that raises stops the fold (`HandlerFailed`)."""
        try:
            handler(state, event)
        except Exception as exc:
            raise self.failure(event, exc) from exc

    def failure(self, event: Event, exc: BaseException) -> HandlerFailed:
        """The one line for a handler that raised on `event`."""
        return HandlerFailed(
            f"projection {self.name!r}: the {event.get('type')!r} handler raised on event "
            f"_id {event.get('_id')!r} (stream {event.get('stream')!r}, version "
            f"{event.get('version')!r}): {type(exc).__name__}: {exc}",
            hint="nothing of that stream was written; --debug shows the traceback",
        )


BUCKETS = ("hour", "day", "month")
KEY_ROOTS = ("stream", "type", "data", "meta", "ts", "_id")


@dataclass(frozen=True)
class KeyRule:
    """A keyed projection's key: a dotted path into the canonical event (`data.tenant`), and
    for a date an optional UTC bucket (`ts:day`). A path, not a function, so that MongoDB can
    query and index it (docs/projections.md, "Keyed projections")."""

    path: str
    bucket: str | None = None

    @classmethod
    def parse(cls, projection: str, text: Any) -> KeyRule:
        """The rule for `key=`; InvalidInput naming the projection for a bad one."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(
                f"projection {projection!r}: key must be a dotted path, not {text!r}"
            )
        path, sep, bucket = text.partition(":")
        parts = path.split(".")
        if parts[0] not in KEY_ROOTS or any(not p or p.startswith("$") for p in parts):
            raise InvalidInput(
                f"projection {projection!r}: key {text!r} is not a path into the event",
                hint=f"a path that starts with {', '.join(KEY_ROOTS)}, e.g. data.tenant or ts:day",
            )
        if parts[0] in ("stream", "type", "ts", "_id") and len(parts) > 1:
            raise InvalidInput(f"projection {projection!r}: {parts[0]} has no fields ({text!r})")
        if bucket and bucket not in BUCKETS:
            raise InvalidInput(
                f"projection {projection!r}: key {text!r}: the bucket is one of "
                f"{', '.join(BUCKETS)}, not {bucket!r}"
            )
        if sep and not bucket:
            raise InvalidInput(f"projection {projection!r}: key {text!r} names no bucket")
        return cls(path, bucket or None)

    def value(self, event: Event) -> Any:
        """The key of an event (the document's `_id`), or None when it has none: a missing or
        null value, one that is not a string or an integer, or with a bucket not a date."""
        value: Any = event
        for part in self.path.split("."):
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        if self.bucket is not None:
            return bucket_start(value, self.bucket) if isinstance(value, datetime) else None
        if isinstance(value, str) or (type(value) is int):
            return value
        return None

    def bounds(self, key: Any) -> tuple[datetime, datetime] | None:
        """For a bucket key, the dates it holds [start, end); None for a plain key."""
        if self.bucket is None:
            return None
        return key, bucket_end(key, self.bucket)


def bucket_start(moment: datetime, bucket: str) -> datetime:
    """The start (UTC) of the hour, day or month that holds `moment` (naive means UTC)."""
    utc = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
    utc = utc.astimezone(timezone.utc)
    if bucket == "hour":
        return utc.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        return utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def bucket_end(start: datetime, bucket: str) -> datetime:
    """The start of the next bucket."""
    if bucket == "hour":
        return start + timedelta(hours=1)
    if bucket == "day":
        return start + timedelta(days=1)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month)


def _clone(value: Any) -> Any:
    """A copy of nested dicts and lists (states are plain data), faster than deepcopy."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


# --- finding projections -------------------------------------------------------------------------


def modules_to_load(
    module: str | None,
    env: Mapping[str, str] | None = None,
    *,
    configured: Iterable[str] | None = None,
) -> list[str]:
    """The built-in modules, then the configured ones, then `--module`.

    `configured` is the resolved `projections` setting (EVSTREAM_PROJECTIONS, else the project
    file's or the context's list: docs/configuration.md); without it, EVSTREAM_PROJECTIONS.
    """
    if configured is None:
        listed = (env if env is not None else os.environ).get(ENV_VAR, "")
        configured = (m.strip() for m in listed.split(",") if m.strip())
    names = [*BUILTIN_MODULES, *configured]
    if module:
        names.append(module)
    return list(dict.fromkeys(names))


def import_module(ref: str) -> Any:
    """A module from a file path (`carts.py`, `./models/carts.py`) or an importable name."""
    path = Path(ref)
    try:
        if ref.endswith(".py") or os.sep in ref:
            if not path.is_file():
                raise InvalidInput(f"cannot load projections from {ref!r}: no such file")
            name = f"evstream_user_{abs(hash(str(path.resolve())))}"
            if name in sys.modules:
                return sys.modules[name]
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise InvalidInput(f"cannot load projections from {ref!r}: not a Python module")
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[name] = loaded
            try:
                spec.loader.exec_module(loaded)
            except BaseException:
                del sys.modules[name]
                raise
            return loaded
        return importlib.import_module(ref)
    except InvalidInput:
        raise
    except Exception as exc:
        raise InvalidInput(
            f"cannot load projections from {ref!r}: {type(exc).__name__}: {exc}"
        ) from exc


def projections_in(module: Any) -> list[Projection]:
    """The projections a module defines at its top level."""
    found: dict[int, Projection] = {}
    for value in vars(module).values():
        if isinstance(value, Projection):
            found.setdefault(id(value), value)
    return list(found.values())


def known_projections(modules: Iterable[str]) -> dict[str, tuple[Projection, str]]:
    """Every projection of these modules by name, with the module it came from.

    Two projections with the same name or the same collection are refused.
    """
    by_name: dict[str, tuple[Projection, str]] = {}
    by_collection: dict[str, tuple[Projection, str]] = {}
    for ref in modules:
        for proj in projections_in(import_module(ref)):
            for key, seen in ((proj.name, by_name), (proj.collection, by_collection)):
                other = seen.get(key)
                if other is not None and other[0] is not proj:
                    what = "name" if seen is by_name else "collection"
                    raise InvalidInput(
                        f"two projections have the {what} {key!r}: {other[0].name!r} in "
                        f"{other[1]} and {proj.name!r} in {ref}",
                        hint="give each projection its own name and collection",
                    )
            by_name[proj.name] = (proj, ref)
            by_collection[proj.collection] = (proj, ref)
    return by_name


def known_upcasters(modules: Iterable[str]) -> Upcasters:
    """The upcasters of these modules, in the order the modules are listed (a cycle across
    modules is refused here, as one within a module is when it loads)."""
    found: list[Upcaster] = []
    for ref in modules:
        loaded = import_module(ref)
        found.extend(upcasters_of(loaded.__name__))
    return Upcasters(found)


def load_upcasters(module: str | None = None, configured: Iterable[str] | None = None) -> Upcasters:
    """The upcasters of the built-in, configured and `--module` modules (as `load_projection`
    finds projections): what `watch --exec` and `watch --upcast` apply."""
    return known_upcasters(modules_to_load(module, configured=configured))


def builtin_projection(name: str) -> Projection:
    """A projection that ships with evstream (`sessions`), without loading users' modules."""
    known = known_projections(BUILTIN_MODULES)
    if name not in known:
        raise InvalidInput(f"no built-in projection named {name!r}")
    return known[name][0]


def load_projections(
    module: str | None = None, configured: Iterable[str] | None = None
) -> list[Projection]:
    """Every projection `load_projection` could load, each with the upcasters it would get:
    what archive and erase keep right."""
    refs = modules_to_load(module, configured=configured)
    upcasters = known_upcasters(refs)
    return [_upcast_by(proj, upcasters) for proj, _ in known_projections(refs).values()]


def _upcast_by(proj: Projection, upcasters: Upcasters) -> Projection:
    """The projection, reading events through the loaded modules' upcasters."""
    if upcasters or proj.upcasters:
        proj.upcasters = upcasters
    return proj


def load_projection(
    name: str, module: str | None = None, configured: Iterable[str] | None = None
) -> Projection:
    """The projection called `name`, from the built-ins, the configured modules (the
    `projections` setting; without it, EVSTREAM_PROJECTIONS) and `module`."""
    refs = modules_to_load(module, configured=configured)
    known = known_projections(refs)
    if name in known:
        return _upcast_by(known[name][0], known_upcasters(refs))
    where = module or ", ".join(refs)
    defined = (
        sorted(known) if module is None else [p.name for p in projections_in(import_module(module))]
    )
    raise InvalidInput(
        f"no projection named {name!r} in {where} (it defines: "
        f"{', '.join(defined) if defined else 'none'})",
        hint="give its module with --module PATH, in EVSTREAM_PROJECTIONS or in the "
        "projections of evstream.toml",
    )
