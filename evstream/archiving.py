"""`evstream archive`: old events moved to a file that `publish --file` restores.
(docs/lifecycle.md)

A run goes through states recorded in `evstream_archives`, each step safe to repeat, so a run
killed at any moment (kill -9 included) and started again finishes the same archive:

1. `writing`: the selected events go to PATH.partial, which is fsynced, read back (count and a
   hash of the ids in order) and renamed to PATH. The log is not touched; a second try writes
   the file afresh.
2. `written`: the file is the truth from here on. Each known projection's state of each stream
   at the archive's edge (what the archived events fold to) is stored as a snapshot, and each
   stream's archived version as its edge; a keyed projection's state of each key, per key
   (`evstream.keyed_archive`, which may refuse and cancel the run before anything is
   deleted). A full rebuild starts each stream from its snapshot and folds only the versions
   above the edge, so it gives what it gave before.
3. `deleting`: the file is checked again, then its events are deleted from the log by id.
4. `done`.

A stream is archived from its start and in version order: an event whose earlier version is
not archived (it is newer than --before) stays, and so does everything after it in its stream.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from evstream.errors import ConcurrencyConflict, EvstreamError, FeatureUnsupported, InvalidInput
from evstream.events import event_problem
from evstream.fieldmap import as_stored
from evstream.keyed_archive import keep_key_snapshots
from evstream.projections import Projection
from evstream.storage import Store
from evstream.storage import lifecycle as db
from evstream.storage.codec import line_id, loads_stored
from evstream.storage.projections import all_checkpoints
from evstream.writer import json_line

SNAPSHOT_BATCH = 5000
Doc = dict[str, Any]


class ArchiveMissing(FeatureUnsupported):
    """A full rebuild needs events that an archive moved out and no snapshot covers (exit 4)."""


@dataclass
class ArchiveReport:
    """What an archive run did (or, in a dry run, would do)."""

    path: str
    dry_run: bool = False
    events: int = 0
    streams: int = 0
    bytes: int = 0
    deleted: int = 0
    held_back: int = 0
    resumed: bool = False
    run: str | None = None
    snapshots: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready object."""
        return {
            "run": self.run,
            "path": self.path,
            "dry_run": self.dry_run,
            "events": self.events,
            "streams": self.streams,
            "bytes": self.bytes,
            "deleted": self.deleted,
            "held_back": self.held_back,
            "resumed": self.resumed,
            "snapshots": self.snapshots,
        }


# --- selection -----------------------------------------------------------------------------------


@dataclass
class Selection:
    """Chooses, from the candidates in (stream, version) order, each stream's run of versions
    from its start (or its last archived version) on, without a gap."""

    edges: dict[str, int]
    held_back: int = 0
    streams: int = 0
    _stream: str | None = None
    _next: int = 0

    def take(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        """The events to archive."""
        counted = False
        for doc in docs:
            if event_problem(doc) is not None:
                self.held_back += 1
                continue
            stream = doc["stream"]
            if stream != self._stream:
                self._stream, self._next = stream, self.edges.get(stream, 0) + 1
                counted = False
            if doc["version"] <= self.edges.get(stream, 0):
                continue  # restored from an earlier archive, which holds it already
            if doc["version"] != self._next:
                self.held_back += 1
                self._next = -1  # the rest of this stream stays
                continue
            if not counted:
                self.streams += 1
                counted = True
            self._next += 1
            yield doc


# --- the file ------------------------------------------------------------------------------------


def _open_write(path: Path, gz: bool) -> IO[bytes]:
    raw = open(path, "wb")  # noqa: SIM115
    if gz:
        return gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)  # type: ignore[return-value]
    return raw


def _lines(path: Path) -> Iterator[bytes]:
    opener: Any = gzip.open if path.suffix == ".gz" or path.name.endswith(".gz.partial") else open
    with opener(path, "rb") as handle:
        yield from handle


def _id_text(ident: Any) -> bytes:
    return json_line({"_id": ident}).encode("utf-8")


def read_back(path: Path) -> tuple[int, str, list[Any]]:
    """A written archive: how many events, the hash of their ids in order, and the ids."""
    digest = hashlib.sha256()
    ids: list[Any] = []
    try:
        for raw in _lines(path):
            if not raw.strip():
                continue
            ident = line_id(raw.decode("utf-8"))
            ids.append(ident)
            digest.update(_id_text(ident))
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise EvstreamError(f"cannot read the archive {path} back: {exc}") from None
    return len(ids), digest.hexdigest(), ids


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- projections known at the archive ---------------------------------------------------------


def check_projections(store: Store, projections: list[Projection]) -> None:
    """Refuse to archive while a projection rebuilt here is not loaded: its snapshot could not be
    taken, and its next full rebuild would miss the archived events."""
    loaded = {p.name for p in projections}
    missing = sorted(
        {
            str(c.get("projection", c["_id"]))
            for c in all_checkpoints(store)
            if str(c.get("projection", c["_id"])) not in loaded
        }
    )
    if missing:
        raise InvalidInput(
            f"projection(s) {', '.join(missing)} were rebuilt here but are not loaded, so their "
            "state at the archive's edge cannot be kept; give --module (or set "
            "EVSTREAM_PROJECTIONS) for them"
        )


def require_snapshots(store: Store, projection: Projection) -> None:
    """Refuse a full rebuild of a projection that archived events are missing from: one that
    was unknown (or of another fold version) when an archive ran, and whose archives are not
    back in the log. Names the archives to restore."""
    runs = [r for r in db.archive_runs(store) if r.get("state") in ("deleting", "done")]
    missing = []
    for run in runs:
        # Keyed projections' snapshots are per key, listed apart (evstream.keyed_archive):
        # a run that kept none for one (before they existed) does not make it known.
        kept = run.get("keyed") if projection.key is not None else run.get("projections")
        known = {(p.get("name"), p.get("version")) for p in kept or []}
        if (projection.name, projection.version) in known:
            continue
        sample = [item["id"] for item in run.get("sample") or []]
        if sample and len(db.existing_ids(store, sample)) == len(sample):
            continue  # restored: its events are back in the log
        missing.append(run)
    if missing:
        paths = ", ".join(str(r.get("path")) for r in missing)
        kind = "keyed projection" if projection.key is not None else "projection"
        raise ArchiveMissing(
            f"{kind} {projection.name!r} (version {projection.version}) was not known when "
            f"{len(missing)} archive(s) moved events out of the log, so a full rebuild cannot "
            f"see them; restore them first with evstream publish --file: {paths}"
        )


# --- the run -------------------------------------------------------------------------------------


def archive(
    store: Store,
    *,
    before: datetime,
    path: str,
    streams: list[str] | None,
    projections: list[Projection],
    dry_run: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    notice: Callable[[str], None] = lambda m: None,
) -> ArchiveReport:
    """Move the events with `ts` before `before` (of these streams) to `path`; see the module."""
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise InvalidInput(f"--to {path} is a directory; give a file path (.ndjson or .ndjson.gz)")
    if before.tzinfo is None:
        before = before.replace(tzinfo=timezone.utc)
    streams = sorted(set(streams)) if streams else None
    fm = store.fieldmap
    if not fm.versioned:
        raise FeatureUnsupported(
            f"archive needs a log with versions, and {fm.describe()} has none (version = false): "
            "a stream's start cannot be cut without a version to restore it to; nothing was "
            "written (docs/lifecycle.md, \"Logs without versions\")"
        )
    report = ArchiveReport(path=str(target), dry_run=dry_run)
    run = db.unfinished_archive(store)
    if run is not None and not _same(run, before, streams, target):
        raise ConcurrencyConflict(
            f"archive run {run['_id']} to {run.get('path')} is unfinished; finish it first: "
            f"{_command(run)}"
        )
    if dry_run:
        return _preview(store, before, streams, report)
    check_projections(store, projections)
    if run is None:
        done = db.finished_archive(store, str(target))
        if done is not None and _same(done, before, streams, target):
            notice(f"this archive finished already (run {done['_id']}); nothing to do")
            report.run, report.events = done["_id"], int(done.get("count") or 0)
            report.streams, report.bytes = (
                int(done.get("stream_count") or 0),
                int(done.get("bytes") or 0),
            )
            return report
        if target.exists():
            raise InvalidInput(f"{target} exists already; archive to a new file")
        if not target.parent.is_dir():
            raise InvalidInput(f"no such directory: {target.parent}")
        run = {
            "_id": str(uuid.uuid4()),
            "state": "writing",
            "before": before,
            "streams": streams,
            "path": str(target),
            "gzip": target.suffix == ".gz",
            "projections": [{"name": p.name, "version": p.version} for p in projections],
            "started_at": datetime.now(timezone.utc),
        }
        db.insert_archive(store, run)
    else:
        report.resumed = True
        notice(f"finishing the interrupted archive run {run['_id']} (state {run['state']})")
        known = {p.name: p for p in projections}
        for item in run.get("projections") or []:
            if item.get("name") not in known:
                raise InvalidInput(
                    f"the interrupted run kept projection {item.get('name')!r}, which is not "
                    "loaded now; give --module (or set EVSTREAM_PROJECTIONS) for it"
                )
    report.run = run["_id"]
    by_name = {p.name: p for p in projections}
    kept = [by_name[p["name"]] for p in run.get("projections") or [] if p.get("name") in by_name]
    report.snapshots = [p.name for p in kept]
    if run["state"] == "writing":
        _write(store, run, target, report, progress)
    count, checksum, ids = read_back(target)
    if count != run.get("count") or checksum != run.get("ids_sha256"):
        raise EvstreamError(
            f"the archive {target} no longer holds what was verified ({count} events, "
            f"{run.get('count')} expected); nothing more was deleted. Put the verified file back "
            "and run the same command again"
        )
    report.events, report.streams, report.bytes = (
        count,
        int(run.get("stream_count", 0)),
        int(run.get("bytes", 0)),
    )
    report.held_back = int(run.get("held_back", 0))
    if run["state"] == "written":
        # Keyed projections' snapshots are per key (evstream.keyed_archive), checked and kept
        # first: a run they refuse is cancelled before anything else of it is stored.
        keep_key_snapshots(store, run, ids, kept)
        _snapshot(store, run, target, [p for p in kept if p.key is None])
        run["state"] = "deleting"
        db.save_archive(store, run)
    if run["state"] == "deleting":
        report.deleted = db.delete_events_by_id(store, ids)
        run["state"] = "done"
        run["deleted"] = int(run.get("deleted", 0)) + report.deleted
        run["finished_at"] = datetime.now(timezone.utc)
        db.save_archive(store, run)
    return report


def _same(run: Doc, before: datetime, streams: list[str] | None, target: Path) -> bool:
    recorded = run.get("before")
    if isinstance(recorded, datetime) and recorded.tzinfo is None:
        recorded = recorded.replace(tzinfo=timezone.utc)
    return recorded == before and run.get("streams") == streams and run.get("path") == str(target)


def _command(run: Doc) -> str:
    before = run.get("before")
    when = (
        before.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if isinstance(before, datetime) else "?"
    )
    parts = ["evstream archive", f"--before {when}", f"--to {run.get('path')}"]
    parts += [f"--stream {s}" for s in run.get("streams") or []]
    return " ".join(parts)


def _preview(
    store: Store, before: datetime, streams: list[str] | None, report: ArchiveReport
) -> ArchiveReport:
    selection = Selection(db.archived_versions(store))
    for doc in selection.take(db.archive_candidates(store, before, streams)):
        report.events += 1
        report.bytes += len(json_line(as_stored(doc)).encode("utf-8")) + 1
    report.streams, report.held_back = selection.streams, selection.held_back
    return report


def _write(
    store: Store, run: Doc, target: Path, report: ArchiveReport, progress: Callable[[int], None]
) -> None:
    """State `writing`: the file written, fsynced, read back and renamed into place."""
    partial = target.with_name(target.name + ".partial")
    selection = Selection(db.archived_versions(store))
    digest = hashlib.sha256()
    count = size = 0
    sample: list[Doc] = []
    key = db.tombstone_key(store)
    with _open_write(partial, bool(run.get("gzip"))) as handle:
        for doc in selection.take(db.archive_candidates(store, run["before"], run.get("streams"))):
            stored = as_stored(doc)  # the document as stored: a mapped log's own shape
            line = (json_line(stored) + "\n").encode("utf-8")
            handle.write(line)
            digest.update(_id_text(stored["_id"]))
            count += 1
            size += len(line)
            if count % 997 == 1 and len(sample) < 100:
                # Known by the stream's keyed hash, so that erase can take it out again.
                sample.append({"id": stored["_id"], "stream": db.stream_hash(key, doc["stream"])})
            progress(1)
        handle.flush()
        raw = getattr(handle, "fileobj", None) or handle
        if raw is not handle:
            handle.close()  # the gzip trailer, before the fsync
        raw.flush()
        os.fsync(raw.fileno())
        if raw is not handle:
            raw.close()
    back, checksum, _ = read_back(partial)
    if back != count or checksum != digest.hexdigest():
        raise EvstreamError(
            f"the archive {partial} did not read back as written ({back} of {count} events); "
            "nothing was deleted"
        )
    os.replace(partial, target)
    _fsync_dir(target)
    run.update(
        state="written",
        count=count,
        ids_sha256=checksum,
        bytes=size,
        stream_count=selection.streams,
        held_back=selection.held_back,
        sample=sample,
        written_at=datetime.now(timezone.utc),
    )
    db.save_archive(store, run)


def _entry(record: Doc | None, proj: Projection) -> Doc | None:
    for snap in (record or {}).get("snapshots") or []:
        if snap.get("projection") == proj.name and snap.get("fold_version") == proj.version:
            return snap
    return None


def _snapshot(store: Store, run: Doc, target: Path, projections: list[Projection]) -> None:
    """State `written`: each projection's state of each archived stream at the edge, and the
    streams' edges, from the verified file (a second try skips what this run stored)."""
    batch: list[tuple[str, list[Doc]]] = []

    def flush() -> None:
        if not batch:
            return
        stored = db.archived_streams(store, [s for s, _ in batch])
        docs: list[tuple[Doc, bool]] = []
        for stream, events in batch:
            record = stored.get(stream)
            if record is not None and record.get("run") == run["_id"]:
                continue  # written by this run before it was interrupted
            through = events[-1]["version"]
            snapshots = []
            for proj in projections:
                before = _entry(record, proj)
                mine = [e for e in events if proj.types is None or e["type"] in proj.types]
                base = before.get("state") if before is not None else None
                if not mine and base is None:
                    continue
                snapshots.append(
                    {
                        "projection": proj.name,
                        "fold_version": proj.version,
                        "through": through,
                        "state": proj.fold(mine, base) if mine else base,
                        "run": run["_id"],
                    }
                )
            names = {(p.name, p.version) for p in projections}
            kept = [
                snap
                for snap in (record or {}).get("snapshots") or []
                if (snap.get("projection"), snap.get("fold_version")) not in names
            ]
            doc = {
                "_id": stream,
                "through": through,
                "run": run["_id"],
                "snapshots": kept + snapshots,
            }
            docs.append((doc, record is not None))
        db.save_archived_streams(store, docs)
        batch.clear()

    current: str | None = None
    events: list[Doc] = []
    fm = store.fieldmap
    for raw in _lines(target):
        if not raw.strip():
            continue
        doc = loads_stored(raw.decode("utf-8"))
        if fm.shaped:
            doc = fm.canonical(doc)  # the file holds the log's own shape; folds read events
        if doc["stream"] != current:
            if current is not None:
                batch.append((current, events))
                if len(batch) >= SNAPSHOT_BATCH:
                    flush()
            current, events = doc["stream"], []
        events.append(doc)
    if current is not None:
        batch.append((current, events))
    flush()


# --- what rebuilds and check read -------------------------------------------------------------


class Starts:
    """A projection's snapshots in stream order, taken alongside the log's streams: where each
    stream's fold starts, and the versions (`through`) it covers."""

    def __init__(
        self, store: Store, projection: Projection, streams: list[str] | None = None
    ) -> None:
        docs: Iterable[Doc]
        if streams is None:
            docs = db.snapshots_of(store, projection.name, projection.version)
        else:
            found = db.snapshots_for(store, projection.name, projection.version, streams)
            docs = [found[s] for s in sorted(found)]
        self._docs = iter(docs)
        self._head: Doc | None = next(self._docs, None)

    def before(self, stream: str | None) -> Iterator[Doc]:
        """Snapshots of streams ordered before `stream` (all that are left for None)."""
        while self._head is not None and (stream is None or self._head["stream"] < stream):
            doc = self._head
            self._head = next(self._docs, None)
            yield doc

    def take(self, stream: str) -> Doc | None:
        """The snapshot of `stream`, if the next one is it."""
        if self._head is not None and self._head["stream"] == stream:
            doc = self._head
            self._head = next(self._docs, None)
            return doc
        return None


def log_starts(store: Store) -> dict[str, Any]:
    """Where the log starts: the archive runs, the newest --before, and the streams archived."""
    runs = db.archive_runs(store)
    done = [r for r in runs if r.get("state") == "done"]
    unfinished = [r for r in runs if r.get("state") != "done"]
    newest = max((r["before"] for r in done if isinstance(r.get("before"), datetime)), default=None)
    return {
        "archives": len(done),
        "archived_events": sum(int(r.get("count") or 0) for r in done),
        "archived_before": newest,
        "unfinished": [
            {"run": r["_id"], "path": r.get("path"), "state": r.get("state"), "fix": _command(r)}
            for r in unfinished
        ],
    }


_SPAN = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_before(text: str, now: datetime | None = None) -> datetime:
    """--before: an ISO-8601 time (local time when it has no offset), or an age such as 90d,
    12h or 30m (that long before now)."""
    value = text.strip()
    unit = value[-1:].lower()
    if unit in _SPAN and value[:-1].isdigit():
        from datetime import timedelta

        moment = now or datetime.now(timezone.utc)
        return moment - timedelta(seconds=int(value[:-1]) * _SPAN[unit])
    from evstream.watching import parse_start

    try:
        when = parse_start(value)
    except InvalidInput:
        when = "now"
    if not isinstance(when, datetime):
        raise InvalidInput(
            f"--before {text!r} is not an ISO-8601 time (2024-05-01T00:00:00Z) or an age (90d, 12h)"
        )
    return when


def archived_edges(store: Store) -> dict[str, int]:
    """Each archived stream's last archived version (its versions in the log start after it)."""
    if not db.archive_runs_exist(store):
        return {}
    return db.archived_versions(store)


def archive_findings(starts: dict[str, Any]) -> list[Any]:
    """`check`'s findings about archives: a run that did not finish."""
    from evstream.check import Finding

    unfinished = starts.get("unfinished") or []
    if not unfinished:
        return []
    first = unfinished[0]
    return [
        Finding(
            "unfinished archive",
            f"an archive run to {first['path']} stopped in state {first['state']}: its events "
            "may be both in the file and in the log, and no other archive can run",
            len(unfinished),
            f"run it again to finish it: {first['fix']}",
            [{"run": u["run"], "path": u["path"], "state": u["state"]} for u in unfinished],
        )
    ]
