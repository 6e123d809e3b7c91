"""`evstream check`: the log's health, from one streamed read (docs/data-model.md).

It reports documents that are not events (`evstream.events.event_problem`), version gaps and
duplicate versions per stream, `ts` going backwards within a stream, missing or conflicting
indexes, and evstream's own collections that look damaged; each finding with its fix. It never
writes. Memory stays flat: the log is read in (stream, version) order, so only the current
stream's last event and a few samples of each finding are held.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from evstream.events import PROBLEM_KINDS, TS_DISORDER, Skipped, event_problem
from evstream.fieldmap import DEFAULT, FieldMap
from evstream.storage import STREAM_VERSION_INDEX, Store
from evstream.storage.check import (
    PROJECTIONS,
    checkpoint_documents,
    estimated_documents,
    log_exists,
    log_indexes,
    projection_documents,
    scan_log,
)
from evstream.storage.log import db_collection, index_findings, index_keys
from evstream.storage.log import log_indexes as index_specs
from evstream.storage.mongo import CHECKPOINTS, EVENTS

SAMPLES = 5
PROGRESS_EVERY = 5_000

# mongosh filters that find the documents of each kind (event_problem checks them in this order,
# so a document matches its own kind's filter, and may match a later one's too).
KIND_FILTERS = {
    "no stream": "{stream: null}",
    "stream not a string": '{$or: [{stream: ""}, {stream: {$not: {$type: "string"}, $ne: null}}]}',
    "no version": "{version: null}",
    "version not a positive integer": (
        '{version: {$ne: null}, $or: [{version: {$not: {$type: ["int", "long"]}}}, '
        "{version: {$lt: 1}}]}"
    ),
    "no type": "{type: null}",
    "type not a string": '{type: {$not: {$type: "string"}, $ne: null}}',
    "no ts": "{ts: null}",
    "ts not a date": '{ts: {$not: {$type: "date"}, $ne: null}}',
}


def kind_filter(kind: str, fm: FieldMap = DEFAULT) -> str:
    """The mongosh filter of a kind of document, on the map's paths."""
    text = KIND_FILTERS[kind]
    if not fm.shaped:
        return text
    paths = fm.paths()

    def moved(match: re.Match[str]) -> str:
        path = paths.get(match.group(1), match.group(1))
        return (path if path.isidentifier() else json.dumps(path)) + ":"

    text = re.sub(r"\b(stream|version|type|ts):", moved, text)
    if fm.ts_unit != "date" and kind.startswith("ts"):
        text = text.replace('"date"', '"number"')
    return text


def mongosh_value(value: Any) -> str:
    """A value as mongosh reads it: "a", 42, ObjectId("…")."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if type(value).__name__ == "ObjectId":
        return f'ObjectId("{value}")'
    return json.dumps(str(value))


@dataclass
class Finding:
    """One kind of problem: what is wrong, how often, a few examples, and the fix."""

    kind: str
    problem: str
    count: int
    fix: str
    samples: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For the JSON output."""
        return {
            "kind": self.kind,
            "problem": self.problem,
            "count": self.count,
            "samples": list(self.samples),
            "fix": self.fix,
        }


@dataclass
class CheckReport:
    """What `evstream check` found; healthy when there are no findings."""

    database: str
    log_exists: bool = True
    documents: int = 0
    events: int = 0
    streams: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    starts: dict[str, Any] | None = None  # where the log starts after archives
    # A log another application shaped: its map, and the first documents it does not fit.
    fieldmap: str | None = None
    misfits: list[Any] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Whether nothing was found."""
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        """The report as one JSON object."""
        return {
            "database": self.database,
            "healthy": self.healthy,
            "log_exists": self.log_exists,
            "documents": self.documents,
            "events": self.events,
            "streams": self.streams,
            "seconds": round(self.seconds, 3),
            "problems": sum(f.count for f in self.findings),
            "findings": [f.as_dict() for f in self.findings],
            **({"log_starts": self.starts} if self.starts else {}),
            **(
                {
                    "map": {
                        "log": self.fieldmap,
                        "fits": self.events,
                        "documents": self.documents,
                        "misfits": list(self.misfits),
                    }
                }
                if self.fieldmap is not None
                else {}
            ),
        }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class LogScan:
    """Fold the log's documents (canonical events), in (stream, version) order, into findings
    (on a log without versions, in (stream, ts, id) order: no version findings). Pure: no I/O."""

    def __init__(
        self,
        samples: int = SAMPLES,
        starts: Mapping[str, int] | None = None,
        fm: FieldMap = DEFAULT,
    ) -> None:
        self.samples = samples
        # Each archived stream's last archived version: its versions start after it.
        self.starts = starts or {}
        self.fm = fm
        self.versioned = fm.versioned
        self.misfits: list[Any] = []
        self.documents = 0
        self.events = 0
        self.streams = 0
        self.foreign: dict[str, Skipped] = {}
        self.stream: str | None = None
        self.version = 0
        self.ts: datetime | None = None
        self.last_id: Any = None
        self.gap_streams = 0
        self.missing = 0
        self.gaps: list[dict[str, Any]] = []
        self.dup_streams = 0
        self.duplicates = 0
        self.dups: list[dict[str, Any]] = []
        self.backwards = 0
        self.skew = 0.0  # the largest step back, in seconds
        self.back: list[dict[str, Any]] = []
        self._gap_seen = False
        self._dup_seen = False

    def add(self, doc: Mapping[str, Any]) -> None:
        """Take in the next document of the log."""
        self.documents += 1
        kind = event_problem(doc, self.versioned)
        if kind is not None:
            if len(self.misfits) < self.samples:
                self.misfits.append(doc.get("_id"))
            skipped = self.foreign.get(kind)
            if skipped is None:
                skipped = self.foreign[kind] = Skipped()
                skipped.SAMPLE = self.samples
            skipped.add(doc, kind)
            return
        self.events += 1
        if not self.versioned:
            if doc["stream"] != self.stream:
                self.streams += 1
                self.stream = doc["stream"]
            return
        stream, version, ts = doc["stream"], doc["version"], _aware(doc["ts"])
        if stream != self.stream:
            self.streams += 1
            self.stream, self._gap_seen, self._dup_seen = stream, False, False
            start = self.starts.get(stream, 0) if self.starts else 0
            if version != 1 and version > start + 1:
                self._gap(stream, start, version)
        else:
            if version == self.version:
                self.duplicates += 1
                if not self._dup_seen:
                    self._dup_seen = True
                    self.dup_streams += 1
                    if len(self.dups) < self.samples:
                        ids = [self.last_id, doc["_id"]]
                        self.dups.append({"stream": stream, "version": version, "ids": ids})
            elif version > self.version + 1:
                self._gap(stream, self.version, version)
            if self.ts is not None and self.ts - ts > TS_DISORDER:
                # Within TS_DISORDER is the disorder concurrent publishing may leave, which the
                # watch handover and incremental rebuilds allow for: not a finding.
                self.backwards += 1
                self.skew = max(self.skew, (self.ts - ts).total_seconds())
                if len(self.back) < self.samples:
                    self.back.append(
                        {"stream": stream, "version": version, "_id": doc["_id"], "ts": ts}
                    )
        self.version, self.ts, self.last_id = version, ts, doc["_id"]

    def _gap(self, stream: str, before: int, after: int) -> None:
        self.missing += after - before - 1
        if not self._gap_seen:
            self._gap_seen = True
            self.gap_streams += 1
        if len(self.gaps) < self.samples:
            self.gaps.append({"stream": stream, "after": before, "next": after})

    def findings(self) -> list[Finding]:
        """The log's findings, in a fixed order: foreign documents, duplicates, gaps, ts."""
        found = []
        for kind in PROBLEM_KINDS:
            skipped = self.foreign.get(kind)
            if skipped is None:
                continue
            ids = ", ".join(mongosh_value(i) for i in skipped.sample)
            db = db_collection(self.fm.collection)
            mixed = ""
            if kind == "no version" and self.events:
                # The mixed case: evstream (or another writer) gave versions, an app did not.
                mixed = (
                    "; if an application writes this log without versions, fold it by "
                    f"(ts, id) instead: set version = false in [log] ({self.fm.where()})"
                )
            found.append(
                Finding(
                    "not an event",
                    f"{skipped.total:,} document{'s' * (skipped.total != 1)} with {kind}: not "
                    "events, so rebuilds and status skip them, and watch shows them as "
                    "[not an event: …]",
                    skipped.total,
                    f"see them in mongosh: {db}.find({kind_filter(kind, self.fm)}), or the "
                    f"first ones: {db}.find({{_id: {{$in: [{ids}]}}}}); give them the missing "
                    f"fields, or move them to a collection of their own{mixed}",
                    list(skipped.sample),
                )
            )
        if self.duplicates:
            first = self.dups[0]
            found.append(
                Finding(
                    "duplicate version",
                    f"{self.duplicates:,} event{'s' * (self.duplicates != 1)} "
                    f"repeat{'s' * (self.duplicates == 1)} a version "
                    f"already taken in {self.dup_streams:,} stream"
                    f"{'s' * (self.dup_streams != 1)}: the log has no unique "
                    "{stream, version} index, or had none when they were written",
                    self.duplicates,
                    "keep one event per version: look at them with db.events.find({stream: "
                    f"{mongosh_value(first['stream'])}, version: {first['version']}}}) and "
                    f"delete the extra one (db.events.deleteOne({{_id: "
                    f"{mongosh_value(first['ids'][1])}}})), then create the unique index: "
                    f"{index_specs(self.fm)[0].mongosh(self.fm.collection)}",
                    self.dups,
                )
            )
        if self.missing:
            first = self.gaps[0]
            found.append(
                Finding(
                    "version gap",
                    f"{self.gap_streams:,} stream{'s' * (self.gap_streams != 1)} "
                    f"miss{'es' * (self.gap_streams == 1)} "
                    f"{self.missing:,} version{'s' * (self.missing != 1)} (events deleted, or "
                    "written around evstream): folds see those streams without them",
                    self.missing,
                    "look at a stream's versions: db.events.find({stream: "
                    f"{mongosh_value(first['stream'])}}}, {{version: 1, type: 1, ts: 1}})"
                    ".sort({version: 1}); restore the missing events from a backup or a copy "
                    "with 'evstream publish --file', which keeps their versions",
                    self.gaps,
                )
            )
        if self.backwards:
            found.append(
                Finding(
                    "ts backwards",
                    f"{self.backwards:,} event{'s' * (self.backwards != 1)} "
                    f"ha{'s' if self.backwards == 1 else 've'} a ts up to {self.skew:,.1f} s "
                    "before their stream's previous version's, more than the "
                    f"{TS_DISORDER.total_seconds():g} s the watch handover allows: publishers' "
                    "clocks disagree (ts is the publisher's time), and reads by time ('watch "
                    "--from TIME', incremental rebuilds) see them out of version order",
                    self.backwards,
                    "synchronise the publishers' clocks (NTP); meanwhile give incremental "
                    "rebuilds a margin as wide as the skew: "
                    "'evstream rebuild-sessions --incremental --margin SECONDS'",
                    self.back,
                )
            )
        return found


def index_problems(
    indexes: Iterable[Mapping[str, Any]], findings: list[Finding], fm: FieldMap = DEFAULT
) -> list[Finding]:
    """Missing or conflicting indexes of the log (`evstream.storage.log.index_findings`), and a
    unique {stream, version} index that holds for some documents only (partial or sparse)."""
    rows = [dict(ix) for ix in indexes]
    duplicates = any(f.kind == "duplicate version" for f in findings)
    found = []
    specs = index_specs(fm)
    db, coll = db_collection(fm.collection), fm.collection
    for spec, problem, index in index_findings(rows, specs):
        if problem == "not-unique":
            assert index is not None
            name = index.get("name")
            first = "resolve the duplicate versions above, then " if duplicates else ""
            found.append(
                Finding(
                    "index",
                    f"the index {name!r} on {spec.shape()} is not unique: concurrent "
                    "publishers could store one version twice, so publish and seed refuse to run",
                    1,
                    f'{first}in mongosh: {db}.dropIndex("{name}"); {spec.mongosh(coll)} '
                    "(or run 'evstream publish' or 'evstream seed' after the drop: they create it)",
                    [name],
                )
            )
        else:
            first = (
                "resolve the duplicate versions above, then " if spec.unique and duplicates else ""
            )
            found.append(
                Finding(
                    "index",
                    f"the index {spec.name} is missing: it {spec.why}",
                    1,
                    f"{first}in mongosh: {spec.mongosh(coll)} (the next 'evstream publish' or "
                    "'evstream seed' creates it too)",
                    [spec.name],
                )
            )
    keys = specs[0].keys
    for ix in rows:
        if specs[0].unique and index_keys(ix) == keys and ix.get("unique"):
            if ix.get("partialFilterExpression") or ix.get("sparse"):
                name = ix.get("name", STREAM_VERSION_INDEX)
                found.append(
                    Finding(
                        "index",
                        f"the unique index {name!r} on {specs[0].shape()} is "
                        f"{'partial' if ix.get('partialFilterExpression') else 'sparse'}: "
                        "versions are unique only for the documents it covers",
                        1,
                        f'in mongosh: {db}.dropIndex("{name}"); {specs[0].mongosh(coll)}',
                        [name],
                    )
                )
    return found


def _is_date(value: Any) -> bool:
    return isinstance(value, datetime)


def _position_ok(value: Any) -> bool:
    return value is None or (isinstance(value, Mapping) and _is_date(value.get("ts")))


def checkpoint_problem(doc: Mapping[str, Any], log: str = EVENTS) -> str | None:
    """What is wrong with a watch checkpoint document (evstream_checkpoints), or None."""
    collection = doc.get("collection")
    if not isinstance(collection, str) or not collection:
        return "no collection"
    if not _is_date(doc.get("updated_at")):
        return "no updated_at date"
    if "filters" in doc and not isinstance(doc["filters"], Mapping):
        return "filters not an object"
    if collection == log:
        for name in ("position", "settled"):
            if not _position_ok(doc.get(name)):
                return f"{name} without a ts date"
    elif "token" not in doc:
        return "no resume token"
    return None


def projection_problem(doc: Mapping[str, Any]) -> str | None:
    """What is wrong with a projection's checkpoint document (evstream_projections), or None."""
    if not _is_date(doc.get("last_run_at")):
        return "no last_run_at date"
    if not _is_date(doc.get("since")):
        return "no since date"
    covered = doc.get("covered")
    if type(covered) is not int or covered < 0:
        return "no covered count"
    return None


def own_problems(
    checkpoints: Iterable[Mapping[str, Any]],
    projections: Iterable[Mapping[str, Any]],
    log: str = EVENTS,
) -> list[Finding]:
    """Damaged documents in evstream's own collections, one finding per collection."""
    found = []
    bad = [(doc.get("_id"), why) for doc in checkpoints if (why := checkpoint_problem(doc, log))]
    if bad:
        name, why = bad[0]
        watch = f"evstream watch --checkpoint {_shell(name)} --reset-checkpoint --from start"
        found.append(
            Finding(
                "checkpoint",
                f"{len(bad):,} watch checkpoint{'s' * (len(bad) != 1)} in {CHECKPOINTS} "
                f"{'are' if len(bad) != 1 else 'is'} damaged ({_mongo_name(name)}: {why}): "
                "a watch cannot continue from it",
                len(bad),
                f"start it over: {watch} (add the collection and filters it had), or in "
                f"mongosh: db.{CHECKPOINTS}.deleteOne({{_id: {mongosh_value(name)}}})",
                [n for n, _ in bad[:SAMPLES]],
            )
        )
    bad_docs = [(doc, why) for doc in projections if (why := projection_problem(doc))]
    bad = [(doc.get("_id"), why) for doc, why in bad_docs]
    if bad:
        name, why = bad[0]
        command = rebuild_command(bad_docs[0][0])
        found.append(
            Finding(
                "projection checkpoint",
                f"{len(bad):,} projection checkpoint{'s' * (len(bad) != 1)} in {PROJECTIONS} "
                f"{'are' if len(bad) != 1 else 'is'} damaged ({_mongo_name(name)}: {why}): "
                "'--incremental' rebuilds in full until it is rewritten",
                len(bad),
                f"a full rebuild writes it anew: {command}",
                [n for n, _ in bad[:SAMPLES]],
            )
        )
    return found


def rebuild_command(doc: Mapping[str, Any]) -> str:
    """The full rebuild that writes a projection's checkpoint anew (its part, if it has one)."""
    name = doc.get("projection")
    name = name if isinstance(name, str) and name else str(doc.get("_id"))
    partition = doc.get("partition")
    if name == "sessions" and not partition:
        return "evstream rebuild-sessions"
    part = f" --partition {partition}" if isinstance(partition, str) and partition else ""
    return f"evstream rebuild {_shell(name)}{part}"


def _mongo_name(value: Any) -> str:
    return repr(value) if isinstance(value, str) else mongosh_value(value)


def _shell(value: Any) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-_.:/@" for c in text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


class Check:
    """`evstream check` on one store: `total` for a progress bar, then `run`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.exists = log_exists(store)
        self.total = estimated_documents(store) if self.exists else 0

    def run(self, progress: Callable[[int], None] = lambda n: None) -> CheckReport:
        """Read the log once and evstream's own collections; return the findings."""
        started = time.perf_counter()
        fm = self.store.fieldmap
        report = CheckReport(self.store.db.name, log_exists=self.exists)
        from evstream.archiving import archive_findings, archived_edges, log_starts

        if fm.shaped or fm.collection != EVENTS:
            report.fieldmap = fm.describe()
        edges = archived_edges(self.store)
        scan = LogScan(starts=edges, fm=fm)
        if self.exists:
            pending = 0
            for doc in scan_log(self.store):
                scan.add(doc)
                pending += 1
                if pending == PROGRESS_EVERY:
                    progress(pending)
                    pending = 0
            progress(pending)
            report.findings = scan.findings()
            report.findings += index_problems(log_indexes(self.store), report.findings, fm)
        report.findings += own_problems(
            checkpoint_documents(self.store), projection_documents(self.store), fm.collection
        )
        if edges or self.exists:
            starts = log_starts(self.store)
            if starts["archives"] or starts["unfinished"]:
                report.starts = starts
                report.findings += archive_findings(starts)
        report.misfits = scan.misfits
        report.documents, report.events, report.streams = scan.documents, scan.events, scan.streams
        report.seconds = time.perf_counter() - started
        return report


def check(store: Store, progress: Callable[[int], None] = lambda n: None) -> CheckReport:
    """The log's health in one call (see `Check`)."""
    return Check(store).run(progress)
