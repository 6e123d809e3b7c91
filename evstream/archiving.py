"""`evstream archive`: old events moved to a file that `publish --file` restores.
(docs/lifecycle.md)

A run goes through states recorded in `evstream_archives`, each step safe to repeat, so a run
killed at any moment (kill -9 included) and started again finishes the same archive:

1. `writing`: the selected events go to PATH.partial, which is fsynced, read back (the same
   lines, byte for byte: SHA-256) and renamed to PATH. As the events are written, each archived
   stream's record is stored (`evstream_archived_streams`, a thousand streams to a document):
   its archived version (its edge) and each known projection's state of it there, a snapshot.
   They stand only once the run is `written`. The log is not touched; a second try writes the
   file and the records afresh.
2. `written`: the file is the truth from here on. A full rebuild starts each stream from its
   snapshot and folds only the versions above the edge, so it gives what it gave before. A
   keyed projection's state of each key is stored here, per key (`evstream.keyed_archive`,
   which may refuse and cancel the run before anything is deleted).
3. `deleting`: its events are deleted from the log by id (a resumed run reads the file back
   again first, and stops unless it is still what was verified).
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
from evstream.storage.codec import line_id
from evstream.storage.projections import all_checkpoints
from evstream.writer import json_line

WRITE_LINES = 1000
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


@dataclass
class ReadBack:
    """A written archive as read back: its events, the SHA-256 of its lines (uncompressed),
    and, when asked for, their ids in order and the SHA-256 of those."""

    count: int
    sha256: str
    ids: list[Any]
    ids_sha256: str | None = None


def read_back(path: Path, *, ids: bool = True) -> ReadBack:
    """Read a written archive back whole (every line, decompressed)."""
    digest = hashlib.sha256()
    id_digest = hashlib.sha256()
    found: list[Any] = []
    count = 0
    try:
        for raw in _lines(path):
            if not raw.strip():
                continue
            count += 1
            digest.update(raw)
            if ids:
                ident = line_id(raw.decode("utf-8"))
                found.append(ident)
                id_digest.update(_id_text(ident))
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise EvstreamError(f"cannot read the archive {path} back: {exc}") from None
    return ReadBack(count, digest.hexdigest(), found, id_digest.hexdigest() if ids else None)


def _verified(run: Doc, target: Path) -> list[Any]:
    """The ids of a run's written archive, read back again (a resumed run): refused unless the
    file still holds exactly what was verified when it was written."""
    back = read_back(target)
    if "sha256" in run:
        same = back.sha256 == run["sha256"]
    else:  # a run recorded before lines were hashed whole: its ids were
        same = back.ids_sha256 == run.get("ids_sha256")
    if back.count != run.get("count") or not same:
        raise EvstreamError(
            f"the archive {target} no longer holds what was verified ({back.count} events, "
            f"{run.get('count')} expected); nothing more was deleted. Put the verified file back "
            "and run the same command again"
        )
    return back.ids


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
    if run["state"] == "written" and run.get("records") != "chunks":
        # Recorded by an earlier evstream, which stored the streams' records after the file:
        # nothing is deleted yet, so the file is written afresh, records and all.
        run["state"] = "writing"
    if run["state"] == "writing":
        streamed = [p for p in kept if p.key is None]  # a keyed projection folds across streams
        ids = _write(store, run, target, streamed, progress)  # read back and verified just now
    else:
        ids = _verified(run, target)
    report.events, report.streams, report.bytes = (
        int(run["count"]),
        int(run.get("stream_count", 0)),
        int(run.get("bytes", 0)),
    )
    report.held_back = int(run.get("held_back", 0))
    if run["state"] == "written":
        # Keyed projections' snapshots are per key (evstream.keyed_archive): checked and kept
        # here, before anything is deleted; a run they refuse is cancelled.
        keep_key_snapshots(store, run, ids, kept)
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
    store: Store,
    run: Doc,
    target: Path,
    projections: list[Projection],
    progress: Callable[[int], None],
) -> list[Any]:
    """State `writing`: the file written, fsynced, read back (the same lines, byte for byte)
    and renamed into place, and the archived streams' records stored as it is written (they
    stand once the run is `written`); the ids written, in order."""
    partial = target.with_name(target.name + ".partial")
    db.drop_run_chunks(store, run["_id"])  # a second try stores them afresh
    prior = db.archived_versions(store)
    selection = Selection(prior)
    records = Records(store, run["_id"], projections, prior)
    digest = hashlib.sha256()
    ids: list[Any] = []
    size = 0
    sample: list[Doc] = []
    key = db.tombstone_key(store)
    pending: list[bytes] = []
    with _open_write(partial, bool(run.get("gzip"))) as handle:
        for doc in selection.take(db.archive_candidates(store, run["before"], run.get("streams"))):
            stored = as_stored(doc)  # the document as stored: a mapped log's own shape
            line = (json_line(stored) + "\n").encode("utf-8")
            records.add(doc)
            pending.append(line)
            ids.append(stored["_id"])
            if len(ids) % 997 == 1 and len(sample) < 100:
                # Known by the stream's keyed hash, so that erase can take it out again.
                sample.append({"id": stored["_id"], "stream": db.stream_hash(key, doc["stream"])})
            if len(pending) >= WRITE_LINES:
                size += _put(handle, digest, pending)
                progress(len(pending))
                pending.clear()
        size += _put(handle, digest, pending)
        progress(len(pending))
        records.finish()
        handle.flush()
        raw = getattr(handle, "fileobj", None) or handle
        if raw is not handle:
            handle.close()  # the gzip trailer, before the fsync
        raw.flush()
        os.fsync(raw.fileno())
        if raw is not handle:
            raw.close()
    back = read_back(partial, ids=False)
    if back.count != len(ids) or back.sha256 != digest.hexdigest():
        raise EvstreamError(
            f"the archive {partial} did not read back as written ({back.count} of {len(ids)} "
            "events); nothing was deleted"
        )
    os.replace(partial, target)
    _fsync_dir(target)
    run.update(
        state="written",
        count=len(ids),
        sha256=back.sha256,
        bytes=size,
        stream_count=selection.streams,
        held_back=selection.held_back,
        sample=sample,
        records="chunks",
        written_at=datetime.now(timezone.utc),
    )
    db.save_archive(store, run)
    return ids


def _entry(record: Doc | None, proj: Projection) -> Doc | None:
    for snap in (record or {}).get("snapshots") or []:
        if snap.get("projection") == proj.name and snap.get("fold_version") == proj.version:
            return snap
    return None


def _put(handle: IO[bytes], digest: Any, lines: list[bytes]) -> int:
    block = b"".join(lines)
    handle.write(block)
    digest.update(block)
    return len(block)


class Records:
    """The archived streams' records, made as the file is written (events come in stream and
    version order): each stream's edge and each projection's state of it there, folded on the
    state its earlier archive left; stored a chunk of streams at a time."""

    def __init__(
        self, store: Store, run: str, projections: list[Projection], prior: dict[str, int]
    ) -> None:
        self.store, self.run, self.projections, self.prior = store, run, projections, prior
        self.chunk: list[tuple[str, list[Doc]]] = []
        self.seq = 0
        self.stream: str | None = None
        self.events: list[Doc] = []

    def add(self, event: Doc) -> None:
        """The next archived event."""
        if event["stream"] != self.stream:
            self._close()
            self.stream, self.events = event["stream"], []
        self.events.append(event)

    def finish(self) -> None:
        """Store what is left."""
        self._close()
        self._flush()

    def _close(self) -> None:
        if self.stream is not None:
            self.chunk.append((self.stream, self.events))
            self.stream = None
            if len(self.chunk) >= db.CHUNK_STREAMS:
                self._flush()

    def _flush(self) -> None:
        if not self.chunk:
            return
        again = [stream for stream, _ in self.chunk if stream in self.prior]
        bases = db.archived_streams(self.store, again) if again else {}
        records = [
            _record(stream, events, bases.get(stream), self.projections)
            for stream, events in self.chunk
        ]
        db.save_archived_chunk(self.store, self.run, self.seq, records)
        self.chunk.clear()
        self.seq += 1


def _record(
    stream: str, events: list[Doc], before: Doc | None, projections: list[Projection]
) -> Doc:
    """An archived stream's record: its edge, and each projection's state at it, folded on the
    state of its earlier archive (`before`); other projections' snapshots carried over."""
    through = events[-1]["version"]
    snapshots = []
    for proj in projections:
        entry = _entry(before, proj)
        mine = [e for e in events if proj.types is None or e["type"] in proj.types]
        base = entry.get("state") if entry is not None else None
        if not mine and base is None:
            continue
        snapshots.append(
            {
                "projection": proj.name,
                "fold_version": proj.version,
                "through": through,
                "state": proj.fold(mine, base) if mine else base,
            }
        )
    names = {(p.name, p.version) for p in projections}
    kept = [
        snap
        for snap in (before or {}).get("snapshots") or []
        if (snap.get("projection"), snap.get("fold_version")) not in names
    ]
    return {"stream": stream, "through": through, "snapshots": kept + snapshots}


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
