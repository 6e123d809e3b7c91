"""The field map: where a log that another application shaped keeps each of evstream's fields
(docs/adopting.md).

    [log]
    collection = "domain_events"
    stream = "aggregateId"        # dotted paths allowed: "metadata.aggregateId"
    type = "eventType"
    data = "payload"
    meta = "metadata"
    ts = "createdAt"              # a BSON date, or epoch ms / s with ts_unit = "ms" | "s"
    version = "sequence"          # or version = false: no per-stream versions
    id = "_id"

Services and projections speak one **canonical event** (`_id`, `stream`, `version`, `type`,
`data`, `meta`, `ts`, ts a UTC datetime) whatever the map; the storage boundary turns stored
documents into canonical events on every read (`FieldMap.canonical`) and builds stored documents
from canonical fields on publish (`FieldMap.stored`). The default map is the shape evstream
writes itself: nothing is translated (`FieldMap.shaped` is False). Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from evstream.errors import InvalidInput

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The canonical event's fields, in the order a canonical event holds them.
CANONICAL = ("_id", "stream", "version", "type", "data", "meta", "ts")
# The [log] table's keys: each canonical field's key (`id` for `_id`), the collection, ts_unit.
FIELD_KEYS = ("id", "stream", "version", "type", "data", "meta", "ts")
TABLE_KEYS = frozenset({"collection", "ts_unit", *FIELD_KEYS})
TS_UNITS = ("date", "ms", "s")
DEFAULT_COLLECTION = "events"
# Fields whose value is an object: another field's path may lie inside them (meta =
# "metadata", stream = "metadata.aggregateId").
CONTAINERS = ("data", "meta")
_MISSING: Any = object()
# `init` recognises these names, in this order of preference (docs/adopting.md).
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "stream": (
        "aggregateId",
        "aggregate_id",
        "streamId",
        "stream_id",
        "stream",
        "userId",
        "entityId",
    ),
    "type": ("eventType", "event_type", "type", "name"),
    "data": ("payload", "data", "body"),
    "ts": ("createdAt", "created_at", "timestamp", "occurredAt", "ts"),
    "version": ("version", "sequence", "revision", "streamRevision", "seq"),
    "meta": ("metadata", "meta", "headers"),
}


def _key(name: str) -> str:
    return "id" if name == "_id" else name


@dataclass(frozen=True)
class FieldMap:
    """Where each canonical field is stored (dotted paths), in which collection, and how `ts`
    is kept; `version` None for a log without per-stream versions (a stream's order is then
    `(ts, id)`). `source` names the file the map came from, for messages."""

    collection: str = DEFAULT_COLLECTION
    id: str = "_id"
    stream: str = "stream"
    type: str = "type"
    data: str = "data"
    meta: str = "meta"
    ts: str = "ts"
    ts_unit: str = "date"
    version: str | None = "version"
    source: str | None = field(default=None, compare=False)
    # Derived once: whether documents need translating, and the compiled translation.
    shaped: bool = field(init=False, compare=False, repr=False)
    _canonical: Callable[[Mapping[str, Any]], dict[str, Any]] = field(
        init=False, compare=False, repr=False
    )
    # The compiled translations themselves, for loops over many documents: `convert` is
    # `canonical`, `watched` gives a `Canonical` that keeps the stored document.
    convert: Callable[[Mapping[str, Any]], dict[str, Any]] = field(
        init=False, compare=False, repr=False
    )
    watched: Callable[[Mapping[str, Any]], Canonical] = field(init=False, compare=False, repr=False)
    _paths: dict[str, str] = field(init=False, compare=False, repr=False)
    _flat: bool = field(init=False, compare=False, repr=False)
    _versioned: bool = field(init=False, compare=False, repr=False)
    _last_ts: list[Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        found = {
            "_id": self.id,
            "stream": self.stream,
            "version": self.version,
            "type": self.type,
            "data": self.data,
            "meta": self.meta,
            "ts": self.ts,
        }
        paths = {k: v for k, v in found.items() if v is not None}
        object.__setattr__(self, "_paths", paths)
        object.__setattr__(self, "_flat", not any("." in p for p in paths.values()))
        object.__setattr__(self, "_versioned", self.version is not None)
        object.__setattr__(self, "_last_ts", [None, None])
        shaped = paths != {n: n for n in CANONICAL} or self.ts_unit != "date"
        object.__setattr__(self, "shaped", shaped)
        convert, watched = _compile(self)
        object.__setattr__(self, "_canonical", convert)
        object.__setattr__(self, "convert", convert)
        object.__setattr__(self, "watched", watched)

    # --- what the map says ---

    @property
    def versioned(self) -> bool:
        """Whether the log keeps per-stream versions (`version = false` says it does not)."""
        return self.version is not None

    def paths(self) -> dict[str, str]:
        """Each canonical field's stored path (without `version` on a log without versions)."""
        return dict(self._paths)

    def hidden_payload(self) -> dict[str, int]:
        """A projection leaving out data and meta (where no other field lies inside them)."""
        inside = [p for p in self._paths.values() if "." in p]
        return {
            path: 0
            for path in (self.data, self.meta)
            if not any(other.startswith(path + ".") for other in inside)
        }

    def where(self) -> str:
        """The map's origin for a message: its file, else 'the [log] table'."""
        return self.source or "the [log] table"

    def describe(self) -> str:
        """One line: 'domain_events (stream=aggregateId, type=eventType, …)'."""
        moved = [f"{_key(k)}={v}" for k, v in self.paths().items() if k != v]
        if self.ts_unit != "date":
            moved.append(f"ts_unit={self.ts_unit}")
        if not self.versioned:
            moved.append("version=false")
        return f"{self.collection} ({', '.join(moved) or 'evstream shape'})"

    def toml(self) -> str:
        """The map as a `[log]` table."""
        lines = ["[log]", f"collection = {_quote(self.collection)}"]
        for name in ("stream", "type", "data", "meta", "ts"):
            lines.append(f"{name} = {_quote(getattr(self, name))}")
        if self.ts_unit != "date":
            lines.append(f"ts_unit = {_quote(self.ts_unit)}")
        lines.append(f"version = {_quote(self.version) if self.version else 'false'}")
        lines.append(f"id = {_quote(self.id)}")
        return "\n".join(lines) + "\n"

    # --- stored → canonical ---

    def canonical(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The canonical event of a stored document: only the fields it has (a missing one is
        absent, so `evstream.events.event_problem` names it), ts as a UTC datetime where the
        stored value is a number of `ts_unit`; `version` None on a log without versions."""
        return self._canonical(doc)

    def ts_of(self, value: Any) -> Any:
        """A stored ts as a datetime (numbers of ms or s); anything else as it is."""
        if self.ts_unit == "date":
            return value
        return (_ts_ms if self.ts_unit == "ms" else _ts_s)(value)

    @property
    def translates(self) -> bool:
        """Whether a watch of the log hands out `Canonical` events rather than the stored
        documents themselves: where the log is not evstream's own `events`."""
        return self.shaped or self.collection != DEFAULT_COLLECTION

    def canonical_fields(self) -> dict[str, Any] | None:
        """A find projection that has the server name the fields canonically
        (`{"stream": "$aggregateId", …}`, MongoDB 4.4+), so documents read need no translation
        here; None where the server cannot give what `canonical` gives: evstream's own shape
        (nothing to translate), a log without versions (`version` is None there), ts in
        numbers, or a dotted path (MongoDB reads `$a.b` through arrays, `canonical` does not)."""
        if not self.shaped or not self.versioned or self.ts_unit != "date" or not self._flat:
            return None
        return {name: 1 if name == "_id" else "$" + self._paths[name] for name in CANONICAL}

    # --- canonical → stored ---

    def ts_value(self, moment: datetime) -> Any:
        """A time as this log stores ts: the date itself, or whole ms or s since the epoch."""
        if self.ts_unit == "date":
            return moment
        if moment is self._last_ts[0]:  # a batch of events published together shares its ts
            return self._last_ts[1]
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - EPOCH
        value = delta // (
            timedelta(milliseconds=1) if self.ts_unit == "ms" else timedelta(seconds=1)
        )
        self._last_ts[:] = [moment, value]
        return value

    def build(
        self,
        ident: Any,
        stream: str,
        version: int | None,
        kind: str,
        data: Any,
        meta: Any,
        ts: datetime,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The stored document of one event (`meta` None: none), as `stored` builds it; a plain
        dict built in one step where every path is a top-level field and there is no `extra`."""
        if self._flat and not extra:
            doc = {self.id: ident, self.stream: stream}
            if version is not None and self.version is not None:
                doc[self.version] = version
            doc[self.type] = kind
            doc[self.data] = data
            if meta is not None:
                doc[self.meta] = meta
            doc[self.ts] = self.ts_value(ts) if self.ts_unit != "date" else ts
            return doc
        fields = {"_id": ident, "stream": stream, "type": kind, "data": data, "ts": ts}
        if version is not None:
            fields["version"] = version
        if meta is not None:
            fields["meta"] = meta
        return self.stored(fields, extra)

    def set_ts(self, doc: dict[str, Any], moment: datetime) -> None:
        """Give a built document its ts where the map keeps it, as the map keeps it."""
        value = self.ts_value(moment)
        if self._flat:
            doc[self.ts] = value
        else:
            _set(doc, self.ts, value)

    def set_version(self, doc: dict[str, Any], version: int) -> None:
        """Give a built document its version where the map keeps it."""
        if self._flat:
            doc[self.version] = version  # type: ignore[index]
        else:
            assert self.version is not None
            _set(doc, self.version, version)

    def stored(self, event: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict:
        """The stored document of canonical fields (those present; ts a datetime), on top of a
        copy's `extra` fields (what the stored document held beyond the map)."""
        doc: dict[str, Any] = dict(extra) if extra else {}
        paths = self._paths
        # Containers first, so a field kept inside one (stream = "metadata.aggregateId") lands
        # in the object, not under it.
        for name in _BUILD_ORDER:
            value = event.get(name, _MISSING)
            if value is _MISSING or (name == "version" and not self.versioned):
                continue
            path = paths[name]
            if name == "ts" and isinstance(value, datetime):
                value = self.ts_value(value)
            _set(doc, path, value)
        return doc

    def split_stored(self, doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A stored document (a copy's line) as its canonical fields and everything else (what
        `stored` needs to rebuild it exactly)."""
        event = self.canonical(doc)
        if not self.versioned:
            event.pop("version", None)
        rest = dict(doc)
        for name, path in sorted(self.paths().items(), key=lambda kv: -kv[1].count(".")):
            if name in event:
                _unset(rest, path)
        return event, rest

    def looks_stored(self, obj: Mapping[str, Any]) -> bool:
        """Whether an input line is a document of this map's shape (a copy) rather than a
        canonical input line: it holds the mapped stream and type paths, not the canonical
        names."""
        if not self.shaped:
            return False
        return (
            _get(obj, self.stream) is not _MISSING
            and _get(obj, self.type) is not _MISSING
            and not ("stream" in obj and "type" in obj and self.stream != "stream")
        )

    # --- order ---

    def order_key(self, event: Mapping[str, Any]) -> tuple[Any, ...]:
        """A canonical event's place in its stream: its version, or on a log without versions
        (ts, id) with ids compared as MongoDB compares them (numbers, strings, then ObjectIds)."""
        if self.versioned:
            return (event["version"],)
        return (event["ts"], *id_order(event.get("_id")))


_BUILD_ORDER = ("data", "meta", "_id", "stream", "version", "type", "ts")


class Canonical(dict):  # type: ignore[type-arg]
    """A canonical event that keeps the stored document it was read from (`stored`): a watch
    prints what is stored as JSON and the canonical fields in its pretty view."""

    __slots__ = ("stored", "versioned")
    stored: dict[str, Any]
    versioned: bool


def as_stored(doc: Any) -> Any:
    """The stored document behind a `Canonical` event; anything else as it is."""
    return doc.stored if type(doc) is Canonical else doc


# MongoDB's comparison order of BSON types, for the few an id may have.
_ID_RANKS = {
    "NoneType": 1,
    "int": 2,
    "float": 2,
    "Int64": 2,
    "str": 3,
    "dict": 4,
    "list": 5,
    "bytes": 6,
    "Binary": 6,
    "ObjectId": 7,
    "bool": 8,
    "datetime": 9,
}


def id_order(value: Any) -> tuple[int, Any]:
    """An id as a sortable key: MongoDB's type order first, then the value (as text where
    values of a type do not compare)."""
    rank = _ID_RANKS.get(type(value).__name__, 10)
    if rank in (2, 3, 7, 9):
        return (rank, value)
    return (rank, repr(value))


# --- paths ---------------------------------------------------------------------------------------


def _get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, Mapping):
            return _MISSING
        doc = doc.get(part, _MISSING)
        if doc is _MISSING:
            return _MISSING
    return doc


def get_path(doc: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or None where there is none."""
    value = _get(doc, path)
    return None if value is _MISSING else value


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path in `doc`, copying each object on the way (never the caller's)."""
    *parents, last = path.split(".")
    for part in parents:
        inner = doc.get(part)
        inner = dict(inner) if isinstance(inner, dict) else {}
        doc[part] = inner
        doc = inner
    doc[last] = value


def _unset(doc: dict[str, Any], path: str) -> None:
    """Remove a dotted path from `doc` (and objects it leaves empty), copying each object on
    the way."""
    *parents, last = path.split(".")
    chain = [doc]
    for part in parents:
        inner = chain[-1].get(part)
        if not isinstance(inner, dict):
            return
        inner = chain[-1][part] = dict(inner)
        chain.append(inner)
    chain[-1].pop(last, None)
    for part, parent in zip(reversed(parents), reversed(chain[:-1]), strict=True):
        if parent.get(part) == {}:
            del parent[part]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The number types a stored ts may have (bson's Int64 joins when first seen).
_NUMBERS: set[type] = {int, float}


def _ts_ms(value: Any) -> Any:
    """Epoch milliseconds as a UTC datetime (bson's Int64 is an int too); anything else as it
    is. fromtimestamp's float is exact to well under a microsecond for any date of this era."""
    kind = type(value)
    if kind in _NUMBERS or (kind is not bool and isinstance(value, (int, float))):
        _NUMBERS.add(kind)
        try:
            return _fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return value
    return value


def _ts_s(value: Any) -> Any:
    """Epoch seconds as a UTC datetime; anything else as it is."""
    kind = type(value)
    if kind in _NUMBERS or (kind is not bool and isinstance(value, (int, float))):
        _NUMBERS.add(kind)
        try:
            return _fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return value
    return value


_fromtimestamp = datetime.fromtimestamp


def _compile(fm: FieldMap) -> tuple[Callable[..., dict[str, Any]], Callable[..., Canonical]]:
    """The stored → canonical translation as generated functions (a plain dict, and a
    `Canonical` keeping the document), since it runs once per document read (docs/adopting.md,
    "What the map costs"): built in one step from direct lookups when the document has every
    field, else field by field (only those it has)."""
    paths = fm.paths()

    def lookup(path: str) -> str:
        return "doc" + "".join(f"[{part!r}]" for part in path.split("."))

    meta = paths["meta"].split(".")
    has_meta = " and ".join(
        [
            f"type({'doc' + ''.join(f'[{p!r}]' for p in meta[:i])}) is dict"
            for i in range(1, len(meta))
        ]
        + [f"{meta[-1]!r} in {'doc' + ''.join(f'[{p!r}]' for p in meta[:-1])}"]
    )
    ts_lines = [f"        t = {lookup(paths['ts'])}"]
    if fm.ts_unit != "date":
        scale = "t / 1000" if fm.ts_unit == "ms" else "t"
        ts_lines.append(f"        t = FT({scale}, UTC) if type(t) in NUMS else TS(t)")
    version = lookup(paths["version"]) if fm.versioned else "None"
    head = (
        f"'_id': {lookup(paths['_id'])}, 'stream': {lookup(paths['stream'])}, "
        f"'version': {version}, 'type': {lookup(paths['type'])}, "
        f"'data': {lookup(paths['data'])}"
    )
    assigned = [
        ("_id", lookup(paths["_id"])),
        ("stream", lookup(paths["stream"])),
        ("version", version),
        ("type", lookup(paths["type"])),
        ("data", lookup(paths["data"])),
    ]
    fast = [
        "    try:",
        *ts_lines,
        f"        if {has_meta}:",
        f"            ev = {{{head}, 'meta': {lookup(paths['meta'])}, 'ts': t}}",
        "        else:",
        f"            ev = {{{head}, 'ts': t}}",
        "    except (KeyError, TypeError, IndexError):",
        "        ev = slow(doc)",
    ]
    lines = [
        "def canonical(doc):",
        *fast,
        "    return ev",
        "",
        "def watched(doc):",
        # Item by item into the Canonical itself: cheaper than a dict literal copied into one.
        "    ev = C()",
        "    try:",
        *ts_lines,
        *[f"        ev[{name!r}] = {value}" for name, value in assigned],
        f"        if {has_meta}:",
        f"            ev['meta'] = {lookup(paths['meta'])}",
        "        ev['ts'] = t",
        "    except (KeyError, TypeError, IndexError):",
        "        ev = C(slow(doc))",
        "    ev.stored = doc",
        f"    ev.versioned = {fm.versioned!r}",
        "    return ev",
        "",
        "def slow(doc):",
        "    ev = {}",
    ]
    for name in CANONICAL:
        if name == "version" and not fm.versioned:
            lines.append("    ev['version'] = None")
            continue
        path = paths[name].split(".")
        lines.append(f"    v = doc.get({path[0]!r}, M)")
        for part in path[1:]:
            lines.append(f"    v = v.get({part!r}, M) if type(v) is dict else M")
        if name == "ts" and fm.ts_unit != "date":
            lines.append("    if v is not M: ev['ts'] = TS(v)")
        else:
            lines.append(f"    if v is not M: ev[{name!r}] = v")
    lines.append("    return ev")
    scope: dict[str, Any] = {
        "M": _MISSING,
        "TS": _ts_ms if fm.ts_unit == "ms" else _ts_s,
        "FT": _fromtimestamp,
        "UTC": UTC,
        "NUMS": _NUMBERS,
        "C": Canonical,
    }
    exec("\n".join(lines), scope)  # noqa: S102 - code built from validated paths only
    return scope["canonical"], scope["watched"]


# The shape evstream writes itself: nothing is translated.
DEFAULT = FieldMap()


# --- the [log] table -----------------------------------------------------------------------------


def _bad(source: str | None, message: str) -> InvalidInput:
    return InvalidInput(f"{source or 'the [log] table'}: [log] {message}")


def _check_path(source: str | None, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(source, f"{key} must be a field name or a dotted path, not {value!r}")
    parts = value.split(".")
    if any(not p or p.startswith("$") or "\x00" in p for p in parts):
        raise _bad(
            source, f"{key} = {value!r} is not a field path (no empty parts, none starting with $)"
        )
    return value


def from_table(table: Mapping[str, Any] | None, source: str | None = None) -> FieldMap:
    """The field map of a `[log]` table (None: the default map). A bad table (an unknown key, a
    path that is not one, two fields on one path, a field inside another that is not data or
    meta, a bad ts_unit) is InvalidInput naming the file and the key (exit 2)."""
    if not table:
        return DEFAULT if source is None else FieldMap(source=source)
    if not isinstance(table, Mapping):
        raise _bad(source, "must be a table")
    unknown = sorted(set(table) - TABLE_KEYS)
    if unknown:
        raise _bad(
            source,
            f"has an unknown key {unknown[0]!r}; its keys are " + ", ".join(sorted(TABLE_KEYS)),
        )
    kwargs: dict[str, Any] = {"source": source}
    collection = table.get("collection", DEFAULT_COLLECTION)
    if (
        not isinstance(collection, str)
        or not collection
        or collection.startswith(("$", "system.", "evstream_"))
        or "\x00" in collection
        or "$" in collection
    ):
        raise _bad(source, f"collection = {collection!r} is not a collection evstream can use")
    kwargs["collection"] = collection
    unit = table.get("ts_unit", "date")
    if unit not in TS_UNITS:
        raise _bad(source, f"ts_unit = {unit!r} is not one of {', '.join(TS_UNITS)}")
    kwargs["ts_unit"] = unit
    for key in FIELD_KEYS:
        if key not in table:
            continue
        value = table[key]
        if key == "version" and value is False:
            kwargs["version"] = None
            continue
        kwargs[key] = _check_path(source, key, value)
    if kwargs.get("id", "_id") != "_id":
        raise _bad(
            source,
            f"id = {kwargs['id']!r}: evstream keeps event ids in _id (ids are idempotency keys, "
            'and only _id is unique without an index of yours); map id to "_id"',
        )
    fm = FieldMap(**kwargs)
    paths = fm.paths()
    by_path: dict[str, str] = {}
    for name, path in paths.items():
        if path in by_path:
            raise _bad(
                source,
                f"{_key(by_path[path])} and {_key(name)} are both {path!r}: each field needs its "
                "own path",
            )
        by_path[path] = name
    for name, path in paths.items():
        for other, inner in paths.items():
            if other != name and inner.startswith(path + ".") and name not in CONTAINERS:
                raise _bad(
                    source,
                    f"{_key(other)} = {inner!r} lies inside {_key(name)} = {path!r}; only data "
                    "and meta may hold other fields",
                )
    return fm


def missing_paths(fm: FieldMap, sample: Iterable[Mapping[str, Any]]) -> list[str]:
    """The map's required keys (stream, type, ts, and version where mapped) whose path no
    document of a non-empty sample has: a map that names a missing path."""
    docs = list(sample)
    if not docs:
        return []
    required = ["stream", "type", "ts"] + (["version"] if fm.versioned else [])
    paths = fm.paths()
    return [name for name in required if all(_get(doc, paths[name]) is _MISSING for doc in docs)]


# --- proposing a map (`evstream init`) -----------------------------------------------------------


@dataclass
class Proposal:
    """What `evstream init` found: the proposed map, how many sampled documents it fits, the
    sample's size, and what it could not find."""

    fieldmap: FieldMap
    fits: int
    sampled: int
    unfound: list[str]

    def as_dict(self) -> dict[str, Any]:
        """For -o json."""
        fm = self.fieldmap
        return {
            "collection": fm.collection,
            "log": {
                **{_key(k): v for k, v in fm.paths().items()},
                "ts_unit": fm.ts_unit,
                "version": fm.version if fm.versioned else False,
            },
            "fits": self.fits,
            "sampled": self.sampled,
            "unfound": self.unfound,
            "toml": fm.toml(),
        }


def _candidates(doc: Mapping[str, Any], prefix: str = "", depth: int = 0) -> Iterable[str]:
    for key, value in doc.items():
        if not isinstance(key, str):
            continue
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, Mapping) and depth < 1:
            yield from _candidates(value, path + ".", depth + 1)


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def propose(collection: str, sample: list[Mapping[str, Any]]) -> Proposal:
    """A map for a sampled collection: for each field, the most common of the names `init`
    recognises (`COMMON_NAMES`; at the top level first, then one level down), ts_unit from the
    values found there, and `version = false` when no version-like field holds whole numbers."""
    from evstream.events import event_problem

    seen: dict[str, int] = {}
    for doc in sample:
        for path in set(_candidates(doc)):
            seen[path] = seen.get(path, 0) + 1
    chosen: dict[str, str] = {}
    taken: set[str] = set()
    unfound: list[str] = []
    for name in ("stream", "type", "data", "ts", "version", "meta"):
        best = None
        for depth in (0, 1):
            for common in COMMON_NAMES[name]:
                for path, n in seen.items():
                    if path.count(".") != depth or _leaf(path) != common or path in taken:
                        continue
                    if name == "version" and not _mostly_whole(sample, path):
                        continue
                    if best is None or n > seen[best]:
                        best = path
                if best is not None:
                    break
            if best is not None:
                break
        if best is None:
            if name not in ("version", "meta"):
                unfound.append(name)
            continue
        chosen[name] = best
        taken.add(best)
    unit = _ts_unit(sample, chosen.get("ts"))
    kwargs: dict[str, Any] = {"collection": collection, "ts_unit": unit}
    for name in ("stream", "type", "data", "ts", "meta"):
        if name in chosen:
            kwargs[name] = chosen[name]
    kwargs["version"] = chosen.get("version")
    try:
        fm = FieldMap(**kwargs)
        from_table(_table(fm))  # the same rules as a written map
    except InvalidInput:
        fm = FieldMap(collection=collection, version=chosen.get("version"))
    fits = sum(
        1 for doc in sample if event_problem(fm.canonical(doc), versioned=fm.versioned) is None
    )
    return Proposal(fm, fits, len(sample), unfound)


def _table(fm: FieldMap) -> dict[str, Any]:
    table: dict[str, Any] = {_key(k): v for k, v in fm.paths().items()}
    table.update(collection=fm.collection, ts_unit=fm.ts_unit)
    if not fm.versioned:
        table["version"] = False
    return table


def _mostly_whole(sample: list[Mapping[str, Any]], path: str) -> bool:
    values = [v for v in (_get(d, path) for d in sample) if v is not _MISSING]
    whole = sum(1 for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 1)
    return bool(values) and whole * 2 > len(values)


def _ts_unit(sample: list[Mapping[str, Any]], path: str | None) -> str:
    """date, or ms / s for whole numbers there (ms above 10^11: after 1973 in ms, far in the
    future in s)."""
    if path is None:
        return "date"
    numbers = [
        v
        for v in (_get(d, path) for d in sample)
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    dates = [v for v in (_get(d, path) for d in sample) if isinstance(v, datetime)]
    if len(numbers) <= len(dates):
        return "date"
    numbers.sort()
    return "ms" if numbers[len(numbers) // 2] > 1e11 else "s"
