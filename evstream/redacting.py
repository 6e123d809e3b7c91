"""`evstream redact`: the secret rules applied again to events already stored (docs/lifecycle.md).

The one exception to "the log is never updated": a secret that reached the log (published with
`--keep-secrets`, or by another application) must be removable without rewriting history. Only
values inside `data` and `meta` change, each to the redaction marker; `_id`, `stream`, `version`,
`ts` and every other field stay exactly as stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from evstream.errors import InvalidInput
from evstream.events import REDACTED, is_secret_key
from evstream.fieldmap import DEFAULT, FieldMap, get_path
from evstream.storage import Store
from evstream.storage import lifecycle as db
from evstream.storage.projections import all_checkpoints

WRITE_BATCH = 500
_INDEX = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Rules:
    """What counts as a secret: the built-in key patterns, plus exact keys and exact paths."""

    keys: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, keys: Iterable[str] = (), paths: Iterable[str] = ()) -> Rules:
        """Rules from `--keys a,b` (repeatable) and `--path data.x.y` (repeatable)."""
        names = {k.strip().lower() for text in keys for k in text.split(",") if k.strip()}
        checked = set()
        for path in paths:
            path = path.strip()
            root, _, rest = path.partition(".")
            if root not in ("data", "meta") or not rest or "" in rest.split("."):
                raise InvalidInput(
                    f"--path {path!r}: give a dotted path inside data or meta, "
                    "e.g. data.card.number"
                )
            checked.add(path)
        return cls(frozenset(names), frozenset(checked))

    def is_secret(self, key: Any, path: str) -> bool:
        """Whether the field `key` at `path` (list indices left out) holds a secret."""
        if not isinstance(key, str):
            return False
        return key.lower() in self.keys or path in self.paths or is_secret_key(key)


def redact_value(value: Any, where: str, rules: Rules) -> tuple[Any, list[str]]:
    """`value` with its secret fields replaced by the marker, and the paths replaced.

    A value already the marker (or empty) is left as it is: running again changes nothing.
    """
    found: list[str] = []

    def walk(item: Any, path: str, shown: str) -> Any:
        if isinstance(item, dict):
            out = {}
            changed = False
            for key, sub in item.items():
                sub_path = f"{path}.{key}"
                sub_shown = f"{shown}.{key}"
                if rules.is_secret(key, sub_path) and sub not in (None, "", REDACTED):
                    out[key] = REDACTED
                    found.append(sub_shown)
                    changed = True
                else:
                    new = walk(sub, sub_path, sub_shown)
                    changed = changed or new is not sub
                    out[key] = new
            return out if changed else item
        if isinstance(item, list):
            items = [walk(sub, path, f"{shown}[{i}]") for i, sub in enumerate(item)]
            return items if any(a is not b for a, b in zip(items, item, strict=True)) else item
        return item

    return walk(value, where, where), found


def redact_document(
    doc: dict[str, Any], rules: Rules, fm: FieldMap = DEFAULT
) -> tuple[dict[str, Any] | None, list[str]]:
    """The stored event with `data` and `meta` redacted (None when nothing changes), and the
    paths replaced (named `data.…`, `meta.…` whatever the field map calls them). On a mapped
    log, data and meta are where the map keeps them (docs/adopting.md). Every other field is
    the same object, in the same place."""
    found: list[str] = []
    new = dict(doc)
    for name, path in (("data", fm.data), ("meta", fm.meta)):
        current = get_path(doc, path)
        if isinstance(current, dict):
            value, paths = redact_value(current, name, rules)
            if paths:
                new = _replaced(new, path.split("."), value)
                found.extend(paths)
    return (new if found else None), found


def _replaced(doc: dict[str, Any], parts: list[str], value: Any) -> dict[str, Any]:
    """`doc` with the value at the path `parts` replaced, copying only the objects on the way
    (every key stays in its place)."""
    out = dict(doc)
    head, rest = parts[0], parts[1:]
    out[head] = _replaced(out[head], rest, value) if rest else value
    return out


@dataclass
class RedactReport:
    """What a redact run did (or, in a dry run, would do)."""

    dry_run: bool = False
    scanned: int = 0
    changed: int = 0
    fields: int = 0
    paths: dict[str, int] = field(default_factory=dict)
    types: set[str] = field(default_factory=set)
    projections: list[str] = field(default_factory=list)
    archives: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready object."""
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "changed": self.changed,
            "fields": self.fields,
            "paths": dict(sorted(self.paths.items(), key=lambda kv: (-kv[1], kv[0]))[:20]),
            "types": sorted(self.types),
            "rebuild": self.projections,
            "archives": self.archives,
        }


def redact_log(
    store: Store,
    rules: Rules,
    *,
    streams: list[str] | None = None,
    types: list[str] | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> RedactReport:
    """Apply the rules to the stored events (of these streams and types), in place."""
    report = RedactReport(dry_run=dry_run)
    pending: list[dict[str, Any]] = []
    fm = store.fieldmap
    for doc in db.read_events(store, db.log_query(store, streams, types)):
        report.scanned += 1
        progress(1)
        new, found = redact_document(doc, rules, fm)
        if new is None:
            continue
        report.changed += 1
        report.fields += len(found)
        for path in found:
            key = _INDEX.sub("[]", path)
            report.paths[key] = report.paths.get(key, 0) + 1
        kind = get_path(doc, fm.type)
        if isinstance(kind, str):
            report.types.add(kind)
        if not dry_run:
            pending.append(new)
            if len(pending) >= WRITE_BATCH:
                db.replace_events(store, pending)
                pending = []
    if not dry_run:
        db.replace_events(store, pending)
    report.projections = stale_projections(store, report.types)
    # Beyond its reach: what archives moved out of the log, and the snapshots folded from it.
    report.archives = [
        str(run.get("path")) for run in db.archive_runs(store) if run.get("state") != "writing"
    ]
    return report


def stale_projections(store: Store, types: set[str]) -> list[str]:
    """The projections (rebuilt here before) that read any of these types."""
    if not types:
        return []
    names = []
    for checkpoint in all_checkpoints(store):
        declared = checkpoint.get("types")
        if declared is None or (isinstance(declared, list) and types & set(declared)):
            name = checkpoint.get("projection", checkpoint["_id"])
            if name not in names:
                names.append(str(name))
    return names
