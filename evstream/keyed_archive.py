"""Keyed projections and the log's life (docs/lifecycle.md, "Keyed projections").

- **At an archive's edge** (`keep_key_snapshots`, the `written` step of `evstream archive`):
  for each keyed projection known to the run, each key's state folded over the key's archived
  events in log order, on top of an earlier archive's snapshot, is stored in
  `evstream_archived_keys` with `through`, the log position of the key's last archived event.
  Every fold of a key (full, incremental, follower: `evstream.keyed`) starts from it and passes
  over the key's events at or before `through`. That equals the fold of the whole history only
  if no event of the key that stays in the log comes before `through` in log order (a
  held-back event, or another stream's older event under `archive --stream`): such a run is
  refused before anything is deleted, and cancelled (its record and file removed).
  Also stored: for each archived stream (by its keyed hash, never its name) the keys its
  archived events fed, so that erase knows which snapshots hold its events.
- **At an erase** (`KeyedErase`): the keys the stream's events feed are found before its events
  are deleted, and refolded after, from the log that is left and their snapshots; a key left
  with no event loses its document. A snapshot that folded the stream's archived events cannot
  be refolded without the archive file: it is dropped (with the stream's data in it), so the key
  is folded from the log alone from then on, and erase says so, naming the files to restore.

Kill-safe as the runs they belong to: snapshots of this run are written whole and skipped when
the step is repeated; the stream records are written before the key snapshots (so a snapshot
that holds a stream's events always has its record); erase keeps the keys to refold in the
tombstone while it runs, and drops them at the end.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evstream.errors import FeatureUnsupported, InvalidInput
from evstream.events import event_problem
from evstream.keyed import KeyedWriter, Position, edge_of, position, refold_keys, rule_of
from evstream.projections import Projection
from evstream.storage import Store, lifecycle
from evstream.storage import keyed as db
from evstream.storage import projections as logdb
from evstream.storage.projections import all_checkpoints

Doc = dict[str, Any]
RECORD_BATCH = 500


class KeyedEdgeOverlap(FeatureUnsupported):
    """An archive would leave an event of a key that comes before one it moves out (exit 4)."""


@dataclass
class _Key:
    key: Any
    state: Doc | None
    edge: Position | None = None


@dataclass
class _Folded:
    proj: Projection
    keys: dict[str, _Key]
    streams: dict[str, dict[str, Any]]  # stream hash -> {key tag: key}
    resumed: bool
    overlap: str | None


# --- at an archive's edge -------------------------------------------------------------------------


def keep_key_snapshots(
    store: Store, run: Doc, ids: Iterable[Any], projections: list[Projection]
) -> None:
    """State `written` of an archive run: the snapshots of every keyed projection's keys at the
    edge, and the run's `keyed` list of them. Every projection is folded and checked before
    anything is written; an overlap cancels the run (nothing was deleted) and raises
    KeyedEdgeOverlap."""
    keyed = [p for p in projections if p.key is not None]
    if not keyed:
        return
    archived = set(ids)
    secret = lifecycle.tombstone_key(store)
    folded = [_fold(store, run, archived, proj, secret) for proj in keyed]
    overlap = next((f.overlap for f in folded if f.overlap), None)
    if overlap is not None and not any(f.resumed for f in folded):
        _cancel(store, run)
        raise KeyedEdgeOverlap(overlap)
    for item in folded:
        _save(store, run, item)
    # Saved with the run's next state: what `require_snapshots` lets a keyed rebuild through on.
    run["keyed"] = [{"name": p.name, "version": p.version} for p in keyed]


def _fold(store: Store, run: Doc, archived: set[Any], proj: Projection, secret: bytes) -> _Folded:
    """Fold the archived events of each key onto its earlier snapshot, in log order."""
    rule = rule_of(proj)
    stored = db.key_snapshots(store, proj.name, proj.version)
    mine = {tag for tag, snap in stored.items() if snap.get("run") == run["_id"]}
    keys: dict[str, _Key] = {}
    stays: dict[str, Doc] = {}  # keys with an event left in the log that no snapshot holds
    streams: dict[str, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    overlap: str | None = None
    for stored_id, event in db.read_before(store, proj.read_types, run["before"]):
        if event_problem(event, True) is not None:
            continue
        key = rule.value(event)
        if key is None:
            continue
        tag = db.key_tag(key)
        if stored_id not in archived:
            if tag in mine or tag in stays or proj.prepare(event) is None:
                continue
            edge = edge_of(stored.get(tag))
            if edge is None or position(event) > edge:
                stays[tag] = event
            continue
        prepared = proj.prepare(event)
        if prepared is None:
            continue
        if tag in stays and overlap is None:
            overlap = _overlap_line(proj, key, stays[tag], event, run)
        name = event["stream"]
        digest = hashes.get(name)
        if digest is None:
            digest = hashes[name] = lifecycle.stream_hash(secret, name)
        streams.setdefault(digest, {})[tag] = key
        if tag in mine:
            continue  # stored by this run before it was interrupted
        entry = keys.get(tag)
        if entry is None:
            snap = stored.get(tag)
            entry = keys[tag] = _Key(key, copy.deepcopy(snap["state"]) if snap else None)
        entry.state = proj.fold_keyed([prepared], entry.state)  # type: ignore[list-item]
        entry.edge = position(event)
    return _Folded(proj, keys, streams, bool(mine), overlap)


def _overlap_line(proj: Projection, key: Any, stays: Doc, moves: Doc, run: Doc) -> str:
    narrowed = " or without --stream" if run.get("streams") else ""
    return (
        f"keyed projection {proj.name!r}: key {key!r} keeps an event in the log (stream "
        f"{stays['stream']!r} version {stays.get('version')}) that comes before one this archive "
        f"would move out (stream {moves['stream']!r} version {moves.get('version')}) in log "
        "order, so its state at the archive's edge cannot be kept exactly; the run was "
        f"cancelled and nothing was deleted; archive with an earlier --before{narrowed} "
        "(docs/lifecycle.md, \"Keyed projections\")"
    )


def _cancel(store: Store, run: Doc) -> None:
    """Undo a run that deleted nothing: its streams' records (which count only while the run
    stands), its record, then its file (a kill in between leaves the file, which the next run
    with the same --to refuses, naming it)."""
    lifecycle.drop_run_chunks(store, run["_id"])
    db.delete_archive_run(store, run["_id"])
    Path(str(run["path"])).unlink(missing_ok=True)


def _save(store: Store, run: Doc, item: _Folded) -> None:
    """The stream records first (merged with earlier runs'), then the key snapshots."""
    proj = item.proj
    digests = list(item.streams)
    merge = db.any_key_snapshots(store, proj.name, proj.version, "stream")
    for i in range(0, len(digests), RECORD_BATCH):
        part = digests[i : i + RECORD_BATCH]
        before = db.stream_keys(store, proj.name, proj.version, part) if merge else {}
        records = []
        for digest in part:
            keys = {db.key_tag(k): k for k in (before.get(digest) or {}).get("keys") or []}
            keys.update(item.streams[digest])
            records.append(
                {
                    "_id": db.stream_keys_id(proj.name, proj.version, digest),
                    "kind": "stream",
                    "projection": proj.name,
                    "fold_version": proj.version,
                    "stream": digest,
                    "keys": list(keys.values()),
                    "run": run["_id"],
                }
            )
        db.save_archived_keys(store, records, new=not merge)
    fresh = not db.any_key_snapshots(store, proj.name, proj.version)
    snapshots = []
    for entry in item.keys.values():
        assert entry.edge is not None
        ts, stream, version = entry.edge
        snapshots.append(
            {
                "_id": db.snapshot_id(proj.name, proj.version, entry.key),
                "kind": "key",
                "projection": proj.name,
                "fold_version": proj.version,
                "key": entry.key,
                "state": entry.state,
                "through": {"ts": ts, "stream": stream, "version": version},
                "run": run["_id"],
            }
        )
        if len(snapshots) == RECORD_BATCH:
            db.save_archived_keys(store, snapshots, new=fresh)
            snapshots = []
    db.save_archived_keys(store, snapshots, new=fresh)


# --- at an erase ----------------------------------------------------------------------------------


def keyed_checkpoints(store: Store) -> list[Doc]:
    """The checkpoints of keyed projections rebuilt here (their collections hold keys)."""
    return [c for c in all_checkpoints(store) if c.get("key") is not None]


def check_keyed_loaded(store: Store, projections: list[Projection]) -> list[Projection]:
    """The loaded projections whose keys an erase refolds; refuses (exit 2) while a keyed
    projection rebuilt here is not loaded, before anything is erased."""
    by_name = {p.name: p for p in projections}
    chosen: dict[str, Projection] = {}
    missing = []
    for checkpoint in keyed_checkpoints(store):
        name = str(checkpoint.get("projection", checkpoint["_id"]))
        proj = by_name.get(name)
        if proj is None or proj.key is None or proj.collection != checkpoint.get("collection"):
            missing.append(name)
        else:
            chosen[name] = proj
    if missing:
        raise InvalidInput(
            f"keyed projection(s) {', '.join(sorted(set(missing)))} were rebuilt here but are not "
            "loaded, so their keys cannot be refolded without the stream's events; nothing was "
            "erased; give --module (or set EVSTREAM_PROJECTIONS) for them"
        )
    return list(chosen.values())


class KeyedErase:
    """One stream's share of the keyed projections: the keys found before its events go, and
    refolded after (docs/lifecycle.md, "erase")."""

    def __init__(self, store: Store, projections: list[Projection], stream: str, digest: str):
        self.store, self.projections, self.stream, self.digest = (
            store,
            projections,
            stream,
            digest,
        )

    def affected(self, remembered: list[Doc] | None) -> list[Doc]:
        """For each projection, the keys the stream's events feed (in the log, and in archive
        snapshots), with those a killed run remembered: `[{projection, keys}]`."""
        earlier = {r["projection"]: r.get("keys") or [] for r in remembered or []}
        found = []
        for proj in self.projections:
            rule = rule_of(proj)
            keys = {db.key_tag(k): k for k in earlier.get(proj.name, [])}
            for event in db.stream_events(self.store, proj.read_types, self.stream):
                key = rule.value(event)
                if key is not None:
                    keys[db.key_tag(key)] = key
            record = db.stream_keys(self.store, proj.name, proj.version, [self.digest])
            for key in (record.get(self.digest) or {}).get("keys") or []:
                keys[db.key_tag(key)] = key
            found.append({"projection": proj.name, "keys": list(keys.values())})
        return found

    def drop_snapshots(self) -> dict[str, int]:
        """Drop the key snapshots that folded the stream's archived events (of every projection,
        loaded or not) and the stream's records; how many keys each projection lost."""
        lost: dict[str, int] = {}
        ids = []
        for record in db.stream_records(self.store, self.digest):
            name, version = str(record.get("projection")), int(record.get("fold_version") or 0)
            keys = [db.snapshot_id(name, version, k) for k in record.get("keys") or []]
            gone = db.delete_archived_keys(self.store, keys)
            if gone:
                lost[name] = lost.get(name, 0) + gone
            ids.append(record["_id"])
        db.delete_archived_keys(self.store, ids)
        return lost

    def refold(self, affected: list[Doc]) -> tuple[dict[str, int], dict[str, int]]:
        """Refold the affected keys from what is left; keys with nothing left lose their
        document. By collection: how many keys were refolded, and how many documents went."""
        from evstream.projection import RebuildReport

        keys_of = {r["projection"]: r.get("keys") or [] for r in affected}
        refolded: dict[str, int] = {}
        removed: dict[str, int] = {}
        for proj in self.projections:
            keys = keys_of.get(proj.name) or []
            if not keys:
                continue
            report = RebuildReport(
                mode="erase", projection=proj.name, collection=proj.collection, key=proj.key
            )
            writer = KeyedWriter(self.store, proj, report)
            written: set[tuple[str, Any]] = set()
            gone = 0
            for i in range(0, len(keys), RECORD_BATCH):
                part = keys[i : i + RECORD_BATCH]
                # Fewer events than stored: a refold's write never replaces a document of a
                # higher version, so the old ones go first (a kill here: the next run refolds).
                gone += logdb.delete_documents(self.store, proj.collection, part)
                written |= refold_keys(self.store, proj, part, report, writer)
            refolded[proj.collection] = len(written)
            removed[proj.collection] = max(gone - len(written), 0)
        return refolded, removed
