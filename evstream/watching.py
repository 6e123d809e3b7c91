"""`evstream watch`: follow a collection's changes, history then live, with named checkpoints.

For `events` the log itself is the history and the checkpoint: each session opens the change
stream, reads the log from what the ledger does not know to be shown, and follows the stream,
dropping what both delivered until the server says the stream has passed the read. Why that
loses and repeats nothing, how the ledger is saved, and what each server does differently:
docs/handover.md. Other collections are not append-only logs: their checkpoints are the
server's resume tokens, and when it can no longer resume from one the watch stops
(`CheckpointLost`).
"""

from __future__ import annotations

import contextlib
import heapq
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import IO, TYPE_CHECKING, Any

from evstream.errors import EvstreamError, ExitCode, InvalidInput
from evstream.events import TS_DISORDER, canonical_text, part_of_change
from evstream.fieldmap import DEFAULT, Canonical, FieldMap
from evstream.interrupts import CTRL_C
from evstream.liveness import Pulse
from evstream.runtime import fewer_collections
from evstream.storage import EVENTS, Store
from evstream.storage.changes import (
    INVALIDATING_OPS,
    Caught,
    ChangeFeed,
    ChangeHistoryLost,
    HistoryGap,
    LiveChange,
    LogRead,
    NoChangeStreams,
    ReadMark,
    StreamInterrupted,
    collection_exists,
    collection_gone,
    delete_checkpoint,
    event_ts,
    forget_below,
    inserted_since,
    key_fields,
    load_checkpoint,
    log_query,
    record_shown,
    save_checkpoint,
    scan_collection,
    start_window,
    stream_past_read,
)
from evstream.storage.changes import list_checkpoints as _list_checkpoints
from evstream.storage.codec import aware, doc_hash, id_key, key_text

if TYPE_CHECKING:
    from evstream.delivery import ExecOptions, Executor
from evstream.storage.mongo import WATCH_AWAIT_MS as AWAIT_MS

UTC = timezone.utc
OPS = ("insert", "update", "replace", "delete")
# The ledger keeps exact ids for twice this below the newest `ts`.
MARGIN = TS_DISORDER
# When the server answers at once with nothing (nx-27017 does), wait before asking again:
# a tenth of the quiet time so far, between these bounds. An event after a quiet spell is
# printed at most ~10% of that spell (and at most PACE_MAX) later; an idle watcher asks ~10/s.
PACE_MIN = 0.0005
PACE_MAX = 0.1
# Following the log by polling (servers without change streams): between these bounds.
POLL_MIN = 0.02
POLL_MAX = 1.0
# Polling: at most this many events inserted between two looks for late ones are looked at.
LATE_LOOK_MAX = 100_000
# Hand-offs (lists of changes, each at most a driver's batch) the reader thread keeps waiting
# for the main thread before it stops asking the server for more.
HANDOFFS_MAX = 8
# Waits between attempts to reconnect after a lost connection, in seconds.
BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0, 5.0)
# How often a quiet watch looks whether its collection was dropped unannounced (nx-27017) or
# exists yet (the warning for a name that does not).
LOOK_EVERY = 2.0


class CheckpointLost(EvstreamError):
    """The server can no longer resume from a saved position: exit 2, with how to recover."""

    exit_code = ExitCode.USAGE


class CollectionGone(EvstreamError):
    """The watched collection was dropped or renamed: the watch ends (exit 1)."""

    exit_code = ExitCode.UNEXPECTED


class _Stop(Exception):
    """--limit reached, --idle-timeout passed, or --no-follow done: a normal end."""


class _Prefetch:
    """Reads a change stream in a thread, so the server works on the next batch while the
    current one is printed (pymongo asks for a batch only when the last one is used up).

    Changes go through a bounded queue in order, as lists: everything the driver already
    holds goes over in one hand-off (one wake-up of the main thread per batch on a backlog,
    not one per change). The main thread handles, prints and saves them, so what is saved is
    still exactly what was printed. The reader paces empty answers (see PACE_MIN), reports
    what each empty answer says (`Caught`), and hands errors over.
    """

    def __init__(
        self, feed: ChangeFeed, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.feed = feed
        self.clock = clock
        self.sleep = sleep
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # C: cheap per change
        self.stopping = threading.Event()
        self.token: Any = None  # the resume token at the last empty answer
        self.thread = threading.Thread(target=self._run, name="evstream-watch", daemon=True)
        self.thread.start()

    def get(self, timeout: float) -> Any:
        """The next changes (a list), a Caught, or an exception to raise; queue.Empty after
        `timeout`."""
        return self.queue.get(timeout=timeout)

    def waiting(self) -> bool:
        """Whether something is handed over already (`get` would not wait)."""
        return not self.queue.empty()

    def close(self, *, wait: bool = True) -> None:
        """Stop reading (before the stream is closed). `wait=False` for Ctrl-C: the watch is
        ending, and in an outage a read under way can sit out server selection (30 s)."""
        self.stopping.set()
        if wait:
            self.thread.join(AWAIT_MS / 1000 + 2)

    def _put(self, item: Any) -> bool:
        """Queue an item; wait while HANDOFFS_MAX are waiting (memory stays bounded on a
        backlog: at most that many of the driver's batches)."""
        while self.queue.qsize() >= HANDOFFS_MAX:
            if self.stopping.wait(0.005):
                return False
        if self.stopping.is_set():
            return False
        self.queue.put(item)
        return True

    def _run(self) -> None:
        idle_since = self.clock()
        reported: Any = ()  # the server position of the last Caught handed over
        try:
            while not self.stopping.is_set():
                asked = self.clock()
                try:
                    changes = self.feed.poll_batch()
                except HistoryGap as gap:  # said in order, then the stream goes on
                    if not self._put(gap):
                        return
                    changes = [] if gap.change is None else [gap.change]
                if changes:
                    reported = ()
                    idle_since = self.clock()
                    if not self._put(changes):
                        return
                    continue
                now = self.clock()
                self.token = self.feed.resume_token
                caught = self.feed.caught(asked)
                if caught.cluster_time != reported:  # the first empty answer, or one further on
                    reported = caught.cluster_time
                    if not self._put(caught):
                        return
                if now - asked < AWAIT_MS / 2000:
                    self.sleep(idle_pause(now - idle_since))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread to raise
            if not self.stopping.is_set():
                self._put(exc)


# --- what was asked ------------------------------------------------------------------------------


@dataclass
class WatchOptions:
    """What to follow and how: the command line of `evstream watch`, parsed."""

    collection: str = EVENTS
    types: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    start: str | datetime = "now"  # "now", "start" or a time
    start_given: bool = False
    checkpoint: str | None = None
    reset_checkpoint: bool = False
    limit: int | None = None
    idle_timeout: float | None = None
    poll: bool = False  # follow the log by polling even where change streams work
    follow: bool = True  # False (--no-follow): what matches up to now, then exit 0
    # The event log's collection (the field map's, docs/adopting.md): the Watcher sets it.
    log_collection: str = EVENTS

    @property
    def is_log(self) -> bool:
        """Whether the watched collection is the event log."""
        return self.collection == self.log_collection

    def filters(self) -> dict[str, list[str]]:
        """The filters, as saved with a checkpoint."""
        return {
            "types": sorted(self.types),
            "streams": sorted(self.streams),
            "ops": sorted(self.ops),
        }


def parse_start(text: str | None, *, local: timezone | None = None) -> str | datetime:
    """--from: 'now', 'start', or an ISO-8601 time (local time when it has no offset)."""
    if text is None or text.strip().lower() == "now":
        return "now"
    value = text.strip()
    if value.lower() == "start":
        return "start"
    try:
        when = datetime.fromisoformat(
            value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        )
    except ValueError:
        raise InvalidInput(
            f"--from {text!r} is not now, start or an ISO-8601 time such as 2024-05-01T10:30:00Z"
        ) from None
    try:
        if when.tzinfo is None:
            when = when.replace(tzinfo=local) if local else when.astimezone()
        return when.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise InvalidInput(f"--from {text!r} is out of the range of dates") from None


def check_ops(ops: Iterable[str]) -> list[str]:
    """Validate --op values."""
    checked = []
    for op in ops:
        name = op.strip().lower()
        if name not in OPS:
            raise InvalidInput(f"--op {op!r} is not one of {', '.join(OPS)}")
        checked.append(name)
    return checked


# --- one change, as shown ------------------------------------------------------------------------


@dataclass(slots=True)
class Change:
    """One change as evstream shows it: operation, collection, document key, full document."""

    op: str
    collection: str
    key: dict[str, Any]
    doc: dict[str, Any] | None
    when: datetime | None = None  # the event's ts, else the change's wall time
    update: dict[str, Any] | None = None  # what an update changed (updateDescription), if told

    def record(self) -> dict[str, Any]:
        """The JSON line's shape (README, Output): op, collection, key, doc."""
        return {"op": self.op, "collection": self.collection, "key": self.key, "doc": self.doc}


@dataclass
class Hooks:
    """Where a watch reports: each change to show, notices and warnings for stderr.

    A consumer that acknowledges changes later than it is handed them (`watch --exec`,
    docs/delivery.md) returns False from `deliver` until they are processed; the checkpoint
    then moves only past acknowledged changes. `pending` says whether any are waiting, and
    `flush` (between changes, and at a normal end) processes what is due, returning True once
    everything handed over is acknowledged.
    """

    deliver: Callable[[Change], bool | None]
    notice: Callable[[str], None] = lambda message: None
    warning: Callable[[str], None] = lambda message: None
    pending: Callable[[], bool] = lambda: False
    flush: Callable[[bool], bool] | None = None  # flush(everything): acknowledged now?
    batched: bool = False  # acknowledges in batches: a batch may be saved as one
    # Make what `deliver` wrote reach its reader (flush stdout). `deliver` may leave lines in
    # a buffer because the watch calls this before it waits for the server or for changes,
    # before it saves a checkpoint, and when it ends: a reader of a quiet stream sees every
    # line at once, and a change is saved only once written.
    written: Callable[[], None] = lambda: None
    # Whether the consumer asks the watch to end (the Python API's `follow` being closed):
    # looked at wherever the watch checks --idle-timeout, a normal end like it.
    stopped: Callable[[], bool] = lambda: False
    # What the consumer counts itself for its liveness (docs/operating.md), given how many
    # changes were handed to `deliver`: handled, retries, dead_letters; None: those changes.
    figures: Callable[[int], Mapping[str, int]] | None = None
    # Called between changes and while quiet, at least every quarter second (a follower's
    # heartbeat rides on it).
    tick: Callable[[], None] = lambda: None
    # Set by the watch: its heartbeat, for a consumer that holds the watch up for long (a
    # running --exec CMD) to call now and then.
    beat: Callable[[], None] = lambda: None
    # What happens to an event that lands late, for the warning that says so.
    late: str = "it is shown, and may have been shown before"


# --- the ledger: what of the log has been shown --------------------------------------------------

Position = tuple[datetime, tuple[int, Any]]
ID_ONLY = ("_id",)


class Ledger:
    """What of the log has been shown: exact ids near the newest end, one settled position below.

    Pure bookkeeping, no I/O; docs/handover.md says why it is right. An event is known by its
    document key (`fields`: `_id`, or on a sharded log the shard key's fields and `_id`, since
    MongoDB keeps `_id` unique per shard only).
    """

    def __init__(
        self,
        margin: timedelta = MARGIN,
        *,
        settled: Position | None = None,
        recent: Iterable[tuple[Position, Any]] = (),
        origin: datetime | None = None,
        fields: tuple[str, ...] = ID_ONLY,
    ) -> None:
        self.margin = margin
        self.settled = settled
        self.origin = origin
        self.fields = fields
        self._entries: list[Position] = []
        self._ids: dict[tuple[int, Any], Any] = {}  # id key -> the raw id
        self.newest: Position | None = settled
        self.window = 2 * margin
        self._adds = 0
        self.floor: datetime | None = None
        self.settled_count = 0  # window entries summarised into the settled position so far
        for pos, raw in recent:
            self._add(pos, raw)

    def __len__(self) -> int:
        return len(self._entries)

    def ident(self, doc: Mapping[str, Any]) -> Any:
        """The raw id an event is remembered by: its _id, or its document key's values."""
        if self.fields == ID_ONLY:
            return doc.get("_id")
        return [doc.get(name) for name in self.fields]

    def position(self, doc: Mapping[str, Any]) -> Position:
        """An event's place in log order: (ts, id)."""
        return (event_ts(doc), id_key(self.ident(doc)))

    def holds(self, key: tuple[int, Any]) -> bool:
        """Whether the window holds this id (an `id_key`)."""
        return key in self._ids

    def knows(self, doc: Mapping[str, Any]) -> bool:
        """Whether this event has been shown (by id, or at or below the settled position)."""
        pos = self.position(doc)
        return pos[1] in self._ids or (self.settled is not None and pos <= self.settled)

    def admit_read(self, doc: Mapping[str, Any]) -> bool:
        """An event read from the log: True (and remembered) if it has not been shown yet."""
        if self.knows(doc):
            return False
        self._add(self.position(doc), self.ident(doc))
        return True

    def admit_live(self, doc: Mapping[str, Any]) -> str:
        """An event from the change stream: 'new', 'seen' (drop it), or 'late' (show it, warn).

        'late' is an event below the settled position that the ledger no longer holds ids
        for: its `ts` broke the margin, so it may or may not have been shown.
        """
        raw = self.ident(doc)
        key = id_key(raw)
        if key in self._ids:
            return "seen"
        pos = (event_ts(doc), key)
        if self.settled is not None and pos <= self.settled:
            return "late"
        self._add(pos, raw)
        return "new"

    @property
    def overlapping(self) -> bool:
        """Whether a read and the stream may still both deliver an event."""
        return self.floor is not None

    def start_overlap(self, opened_at: datetime) -> None:
        """A stream opened at this time and the log is about to be read: keep ids above it."""
        self.floor = aware(opened_at) - self.margin

    def end_overlap(self) -> None:
        """The server says the stream has passed the read: nothing can come twice any more."""
        self.floor = None
        self._trim()

    def tidy(self) -> None:
        """Summarise what fell out of the window (between changes)."""
        self._trim()

    def read_from(self) -> datetime | None:
        """Where a log read must start: everything below is known to be shown (None: all)."""
        if self.settled is not None:
            return self.settled[0]
        return self.origin

    def _add(self, pos: Position, raw: Any) -> None:
        heapq.heappush(self._entries, pos)
        self._ids[pos[1]] = raw
        if self.newest is None or pos > self.newest:
            self.newest = pos
        self._adds += 1
        if self._adds % 64 == 0:
            self._trim()

    def _threshold(self) -> datetime | None:
        if self.newest is None:
            return None
        threshold = self.newest[0] - self.window
        if self.floor is not None:
            threshold = min(threshold, self.floor)
        return threshold

    def _trim(self) -> None:
        """Summarise entries below the window into the settled position (smallest first)."""
        threshold = self._threshold()
        entries = self._entries
        if threshold is None:
            return
        while entries and entries[0][0] < threshold:
            pos = heapq.heappop(entries)
            self.settled_count += 1
            self._settle(pos)  # before its id is forgotten: the settled position keeps it
            self._ids.pop(pos[1], None)

    def _settle(self, pos: Position) -> None:
        if self.settled is None or pos > self.settled:
            self.settled = pos
            self._settled_raw = self._ids.get(pos[1], self._settled_raw)

    _settled_raw: Any = None

    @property
    def settled_ident(self) -> Any:
        """The raw id of the settled position."""
        return self._settled_raw

    def snapshot(self) -> dict[str, Any]:
        """The ledger as data: settled position, window entries (ts, id), newest, origin."""
        self._trim()
        newest_raw = self._ids.get(self.newest[1], self._settled_raw) if self.newest else None
        return {
            "settled": None
            if self.settled is None
            else {"ts": self.settled[0], "id": self._settled_raw},
            "recent": [[pos[0], self._ids.get(pos[1])] for pos in sorted(self._entries)],
            "position": None if self.newest is None else {"ts": self.newest[0], "id": newest_raw},
            "origin": self.origin,
        }

    @classmethod
    def from_snapshot(
        cls, saved: Mapping[str, Any], margin: timedelta = MARGIN, fields: tuple[str, ...] = ID_ONLY
    ) -> Ledger:
        """A ledger as a checkpoint saved it."""
        settled_doc = saved.get("settled")
        settled = None
        if settled_doc:
            settled = (aware(settled_doc["ts"]), id_key(settled_doc.get("id")))
        recent = [((aware(ts), id_key(raw)), raw) for ts, raw in saved.get("recent") or []]
        origin = saved.get("origin")
        ledger = cls(
            margin,
            settled=settled,
            recent=recent,
            origin=aware(origin) if isinstance(origin, datetime) else None,
            fields=fields,
        )
        if settled_doc:
            ledger._settled_raw = settled_doc.get("id")
        return ledger


def idle_pause(idle_for: float) -> float:
    """How long to wait before asking again after a quick empty answer (see PACE_MIN)."""
    return min(PACE_MAX, max(PACE_MIN, idle_for / 10))


def poll_pause(idle_for: float) -> float:
    """How long to wait between polls of the log that found nothing new."""
    return min(POLL_MAX, max(POLL_MIN, idle_for / 10))


def list_checkpoints(store: Store) -> list[dict[str, Any]]:
    """Every saved checkpoint: name, collection, updated_at, position_ts, behind (events only)."""
    return _list_checkpoints(store)


def change_match(options: WatchOptions, fm: FieldMap = DEFAULT) -> dict[str, Any]:
    """--op, --type and --stream as a change stream's $match (empty: no filter), on the map's
    paths."""
    match: dict[str, Any] = {}
    if options.ops:
        match["operationType"] = {"$in": list(options.ops)}
    if options.types:
        match[f"fullDocument.{fm.type}"] = {"$in": list(options.types)}
    if options.streams:
        match[f"fullDocument.{fm.stream}"] = {"$in": list(options.streams)}
    return match


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


# --- the watch -----------------------------------------------------------------------------------


class Watcher:
    """One `evstream watch` run: sessions of (open, read, follow), reconnecting between them."""

    def __init__(
        self,
        store: Store,
        options: WatchOptions,
        hooks: Hooks,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        log = store.log_name
        if options.log_collection != log:
            # `watch` with no collection named follows the log, wherever the map keeps it.
            collection = log if options.collection == EVENTS else options.collection
            options = replace(options, collection=collection, log_collection=log)
        self.options = options
        self.hooks = hooks
        self.clock = clock
        self.sleep = sleep
        self.count = 0
        self.fields: tuple[str, ...] = ID_ONLY  # the watched collection's document key
        self.ledger: Ledger | None = Ledger() if options.is_log else None
        self.token: Any = None
        self.position_ts: datetime | None = None
        self.polling = options.poll
        self.fresh = True  # no session has run yet
        self.reached = False  # the server answered once: later connection errors are ridden out
        self.needs_read = False  # the next session reads the log (events) / scans (others)
        self.last_change = clock()
        self.outage_since: float | None = None
        self.failures = 0
        self.dirty = False  # a change was printed but its checkpoint not yet saved
        self.warned_late = False
        self.warned_gap = False
        self.warned_missing = False
        self.seen_existing = False
        self.next_look = 0.0
        self.handover: ReadMark | None = None  # where this session's read ended, until passed
        self.scan_keys: dict[str, int] | None = None  # other collections: docs read by the scan
        self._checkpoint_base: dict[str, Any] | None = None
        self.resumed_from: datetime | None = None  # updated_at of the checkpoint continued
        self.unsaved: list[tuple[datetime, Any]] = []  # printed log events not yet in the window
        self.saved_since = 0  # window inserts since the checkpoint document was last written
        self.written_at = clock()
        # Polling: where the last look for late events ended, and what was shown since.
        self.poll_marker: Any = None  # the _id of the newest inserted event at the last look
        self.next_late_look = 0.0
        self.shown_lately: set[tuple[int, Any]] = set()
        self.shown_before: set[tuple[int, Any]] = set()
        # Liveness (docs/operating.md): carried by every checkpoint document written, and
        # written alone (the last document again) every heartbeat while nothing else is.
        self.pulse: Pulse | None = Pulse("watch", clock=clock) if options.checkpoint else None
        self.saved_doc: dict[str, Any] | None = None
        hooks.beat = self._beat_quietly

    # --- setup ---

    def prepare(self) -> None:
        """Load, reset or create the checkpoint, and decide where the first session starts."""
        opts = self.options
        if opts.start not in ("now", "start") and not opts.is_log:
            raise InvalidInput(
                "--from TIME needs the events log's ts; for other collections use now or start"
            )
        if opts.poll and not opts.is_log:
            raise InvalidInput("--poll follows the events log only")
        if isinstance(opts.start, datetime) and opts.start > utcnow() + MARGIN:
            self.hooks.warning(
                f"--from {opts.start.isoformat(timespec='seconds')} is in the future: "
                "nothing will show until events with a ts from then on arrive"
            )
        self.fields = key_fields(self.store, opts.collection)
        if self.ledger is not None:
            self.ledger.fields = self._event_fields()
        saved = None
        if opts.checkpoint is not None:
            if not opts.checkpoint.strip() or len(opts.checkpoint) > 200:
                raise InvalidInput("--checkpoint NAME must be 1 to 200 characters")
            if opts.reset_checkpoint:
                if delete_checkpoint(self.store, opts.checkpoint):
                    self.hooks.notice(f"checkpoint {opts.checkpoint!r} reset")
            else:
                saved = load_checkpoint(self.store, opts.checkpoint)
        elif opts.reset_checkpoint:
            raise InvalidInput("--reset-checkpoint needs --checkpoint NAME")
        if saved is not None:
            self._resume(saved)
            return
        if opts.is_log:
            assert self.ledger is not None
            if opts.start == "start":
                self.ledger.origin = None
                self.needs_read = True
            elif isinstance(opts.start, datetime):
                self.ledger.origin = opts.start
                self.needs_read = True
            else:
                self._baseline()
        else:
            self.needs_read = opts.start == "start"
        if opts.checkpoint is not None:
            self._checkpoint_base = {
                "_id": opts.checkpoint,
                "collection": opts.collection,
                "filters": opts.filters(),
                "created_at": utcnow(),
            }
            if opts.is_log:
                assert self.ledger is not None
                start_window(self.store, opts.checkpoint)
                baseline = self.ledger.snapshot()["recent"]
                record_shown(self.store, opts.checkpoint, [(ts, raw) for ts, raw in baseline])
                self._write_checkpoint()

    def _resume(self, saved: dict[str, Any]) -> None:
        opts = self.options
        name = opts.checkpoint
        if saved.get("collection") != opts.collection:
            raise InvalidInput(
                f"checkpoint {name!r} follows {saved.get('collection')!r}, not {opts.collection!r}",
                hint="use another name, or --reset-checkpoint to start it over",
            )
        if (saved.get("filters") or {}) != opts.filters():
            raise InvalidInput(
                f"checkpoint {name!r} was saved with other filters "
                f"({_describe(saved.get('filters'))})",
                hint="give the same --type/--stream/--op, another name, or --reset-checkpoint",
            )
        if opts.start_given:
            self.hooks.notice(
                f"continuing checkpoint {name!r}; --from is ignored "
                "(add --reset-checkpoint to start it over)"
            )
        self._checkpoint_base = {
            k: saved[k] for k in ("_id", "collection", "filters", "created_at") if k in saved
        }
        self.resumed_from = saved.get("updated_at")
        if opts.is_log:
            self.ledger = Ledger.from_snapshot(saved, fields=self._event_fields())
            self.needs_read = True
        else:
            self.token = saved.get("token")
            self.position_ts = saved.get("position_ts")

    def _event_fields(self) -> tuple[str, ...]:
        """The document key's fields as a canonical event names them (a log sharded on a
        mapped stream path: `stream`), for the ledger, which reads canonical events."""
        fm = self.store.fieldmap
        if self.fields == ID_ONLY or not fm.translates:
            return self.fields
        canonical = {path: name for name, path in fm.paths().items()}
        return tuple(canonical.get(name, name) for name in self.fields)

    def _baseline(self) -> None:
        """--from now on the log: remember what is already there near now, shown or not.

        Read before the stream opens, so that a later read (after a lost connection, or from
        a checkpoint) neither shows these nor misses anything committed after the stream opened.
        """
        assert self.ledger is not None
        origin = utcnow() - self.ledger.margin
        self.ledger.origin = origin
        fields = {name: 1 for name in (*self._event_fields(), "ts")}
        for doc in LogRead(self.store, self.options.filters(), origin, projection=fields):
            self.ledger.admit_read(doc)

    # --- the run ---

    def run(self) -> int:
        """Follow until --limit, --idle-timeout, --no-follow's end, an error, or Ctrl-C."""
        try:
            # A watch allocates a few objects per change and keeps almost none: the cyclic
            # collector need not scan them every 700 allocations (evstream/runtime.py).
            with CTRL_C, fewer_collections():
                self._run()
        except _Stop:
            self.hooks.written()
            self._flush(everything=True)  # a normal end: what waits for a handler goes now
            self._finish()
            return self.count
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):  # a gone reader must not hide the Ctrl-C
                self.hooks.written()
            self._finish()
            raise
        except Exception as exc:
            with contextlib.suppress(OSError):  # what was printed still reaches its reader
                self.hooks.written()
            self._failed(exc)
            raise
        return self.count

    def _flush(self, *, everything: bool = False) -> None:
        """Let a consumer that acknowledges later process what is due, then save."""
        if self.hooks.flush is None or not self.hooks.pending():
            return
        with CTRL_C.held:
            if self.hooks.flush(everything) and self.options.checkpoint is not None:
                self._save()

    def _finish(self) -> None:
        """On the way out: the last printed change's save, and a fresh checkpoint document.

        Changes still waiting for a consumer's acknowledgement are not saved: after a restart
        they are delivered again."""
        if self._checkpoint_base is None:
            return
        try:
            # Bounded: Ctrl-C in an outage must not wait out server selection (30 s) for a
            # write that only tidies up.
            with self.store.quickly():
                if not self.hooks.pending():
                    if self.dirty:
                        self._save()
                    if self.ledger is not None and self.saved_since:
                        self._write_checkpoint()
                self._heartbeat("stopped")
        except Exception:  # noqa: BLE001 - best effort: every printed change was saved already
            pass

    def _failed(self, exc: BaseException) -> None:
        """On the way out on an error: the liveness says so (best effort, bounded)."""
        if self.pulse is None or self.saved_doc is None:
            return
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        with contextlib.suppress(Exception), self.store.quickly():
            self._heartbeat("failed", str(message))

    def _run(self) -> None:
        try:
            self.prepare()
        except StreamInterrupted as exc:
            raise exc.translated from None  # as every other command says it
        while True:
            try:
                if self.polling:
                    self._poll_session()
                else:
                    self._stream_session()
            except StreamInterrupted as exc:
                if not self.reached and exc.connection:
                    raise exc.translated from None  # never reached: exit 3, as other commands
                self._ride_out(exc)
            except ChangeHistoryLost as exc:
                if self.ledger is None:
                    raise self._lost(exc) from None
                self._history_lost(exc)

    def _history_lost(self, exc: ChangeHistoryLost) -> None:
        """The log is its own history: a new session reads it from the ledger."""
        assert self.ledger is not None
        since = self.ledger.read_from()
        where = f"{since:%Y-%m-%d %H:%M:%S} UTC" if since else "the start"
        self.hooks.notice(
            f"the server's change history no longer reaches the watch's position ({exc.name}); "
            f"reading the log from {where} instead, then live again"
        )
        self.needs_read = True

    def _ride_out(self, exc: StreamInterrupted) -> None:
        """A lost connection or a restarting server: say so once, wait, and try again."""
        now = self.clock()
        if self.outage_since is None:
            self.outage_since = now
            self.failures = 0
            self.hooks.notice(f"lost the connection to the server ({exc.message}); retrying")
        if exc.gap is not None:
            self._warn_gap(exc.gap)
        delay = BACKOFF[min(self.failures, len(BACKOFF) - 1)] * random.uniform(0.8, 1.2)
        self.failures += 1
        self._check_idle(extra=delay)
        self.sleep(delay)
        self._check_idle()

    def _warn_gap(self, message: str) -> None:
        """Once: the server's change history may miss changes from an outage (a collection
        other than the log, which cannot be read again; docs/handover.md)."""
        if not self.warned_gap:
            self.warned_gap = True
            self.hooks.warning(message)

    def _reconnected(self) -> None:
        if self.outage_since is not None:
            seconds = self.clock() - self.outage_since
            self.hooks.notice(f"reconnected after {seconds:.1f} s; continuing where the watch was")
            self.outage_since = None
            self.failures = 0

    def _lost(self, exc: ChangeHistoryLost) -> CheckpointLost:
        name = self.options.checkpoint
        what = f"checkpoint {name!r}" if name else "the watch's last position"
        since = f" (saved {self.position_ts:%Y-%m-%d %H:%M:%S} UTC)" if self.position_ts else ""
        return CheckpointLost(
            f"the server can no longer resume {what}{since}: "
            f"{exc.name}; changes to "
            f"{self.options.collection!r} since then are no longer in its change history",
            hint=f"start over with --checkpoint {name} --reset-checkpoint --from start to re-read "
            "the collection, or --from now to skip the gap knowingly"
            if name
            else "start again with --from start",
        )

    # --- change streams ---

    def _open(self) -> ChangeFeed:
        match = change_match(self.options, self.store.fieldmap)
        pipeline = self.store.watch_pipeline(match, INVALIDATING_OPS)
        resume = self.token if not self.options.is_log else None
        rereads = self.ledger is not None  # the log is read again after an interruption
        return ChangeFeed(self.store, self.options.collection, pipeline, resume, rereads=rereads)

    def _stream_session(self) -> None:
        self._look(force=True)  # before the stream: opening one may create the collection
        opened_at = utcnow()
        try:
            feed = self._open()
        except NoChangeStreams:
            if not self.options.is_log:
                raise NoChangeStreams(
                    f"cannot watch {self.options.collection!r}: this server has no change "
                    "streams (a standalone mongod)",
                    hint="run mongod as a replica set, even a single-node one: "
                    "mongod --replSet rs0, then rs.initiate() in mongosh",
                ) from None
            self.polling = True
            self.hooks.notice(
                "this server has no change streams (a standalone mongod): "
                "following the log by polling it"
            )
            self._poll_session()
            return
        self.reached = True
        with feed:
            self._reconnected()
            if self.dirty:
                self._save()
            self._announce()
            self.handover = None
            if self.ledger is not None and (self.needs_read or not self.fresh):
                self.ledger.start_overlap(opened_at)
                self.handover = self._read_log(handover=True)
            elif self.needs_read:
                self.handover = self._scan_collection()
            elif self.ledger is None and self.options.checkpoint and self.token is None:
                self.token = feed.resume_token  # a restart continues from here, not "now"
                self._save()
            self.fresh = False
            self.needs_read = False
            if not self.options.follow:
                raise _Stop
            self._follow(feed)

    def _announce(self) -> None:
        if not self.fresh:
            return
        opts = self.options
        where = f"{self.store.db.name}.{opts.collection}"
        if self.resumed_from is not None:
            saved = self.resumed_from.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            start = f"checkpoint {opts.checkpoint!r} (saved {saved})"
        elif opts.start == "start":
            start = "the start"
        elif isinstance(opts.start, datetime):
            start = opts.start.astimezone().isoformat(timespec="seconds")
        else:
            start = "now"
        if not opts.follow:
            how = "up to now"
        else:
            how = "polling the log" if self.polling else "live"
        self.hooks.notice(f"watching {where} from {start}, {how} (Ctrl-C to stop)")

    def _follow(self, feed: ChangeFeed) -> None:
        """Print the stream's changes as they come; a reader thread fetches the next ones."""
        reader = _Prefetch(feed, self.clock, self.sleep)
        token_saved_at = float("-inf")
        written = self.hooks.written
        interrupted = False
        try:
            while True:
                self._check_idle()
                if not reader.waiting():
                    written()  # about to wait: what was printed reaches its reader now
                try:
                    item = reader.get(self._wait())
                except queue.Empty:
                    item = None  # quiet: the server has not answered yet, which says nothing
                if type(item) is list:
                    for change in item:
                        self._handle(change)
                        if self.handover is not None:  # else nothing for _passed to end
                            self._passed(change)
                    self._beat()
                    continue
                if item is None or isinstance(item, Caught):
                    if isinstance(item, Caught):
                        self._passed(item)
                    # Housekeeping between changes.
                    written()
                    self._flush()
                    now = self.clock()
                    if self.ledger is not None:
                        self.ledger.tidy()
                    self._look()
                    self._beat()
                    if (
                        self.options.checkpoint
                        and not self.options.is_log
                        and now - token_saved_at > 1
                    ):
                        token = reader.token
                        if token is not None and token != self.token:
                            self.token = token
                            self._save()
                        token_saved_at = now
                    continue
                if isinstance(item, BaseException):
                    if isinstance(item, HistoryGap):
                        self._warn_gap(item.message)
                        continue
                    raise item
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            reader.close(wait=not interrupted)

    def _passed(self, seen: LiveChange | Caught) -> None:
        """End the handover's overlap once the server says the stream has passed the read."""
        if self.handover is None or not stream_past_read(self.handover, seen):
            return
        self.handover = None
        if self.ledger is not None:
            self.ledger.end_overlap()
        self.scan_keys = None

    def _wait(self) -> float:
        """How long to wait for the next change before housekeeping (and --idle-timeout)."""
        timeout = self.options.idle_timeout
        if timeout is None:
            return 0.25
        left = timeout - (self.clock() - self.last_change)
        return min(0.25, max(left, 0.001))

    def _handle(self, change: LiveChange) -> None:
        op = change.op
        if op in INVALIDATING_OPS:
            raise self._gone(change)
        if op not in OPS:
            return
        doc = change.doc
        key = change.key
        when = change.wall
        shown = None
        if self.ledger is not None and op == "insert" and doc is not None:
            verdict = self.ledger.admit_live(doc)
            ts = doc.get("ts")
            if verdict == "seen":
                return
            if verdict == "late":
                self._warn_late(doc)
            when = ts if isinstance(ts, datetime) else when
            if verdict == "new" and self._checkpoint_base is not None:
                shown = (event_ts(doc), self.ledger.ident(doc))
        elif self.scan_keys is not None and op == "insert" and doc is not None:
            seen = self.scan_keys.pop(key_text(key), None)
            if seen is not None and seen == doc_hash(doc):
                return
        self.token = change.token
        self.position_ts = when or utcnow()
        change_seen = Change(op, self.options.collection, key, doc, when, change.update)
        self._deliver(change_seen, shown)

    def _gone(self, change: LiveChange) -> CollectionGone:
        name = self.options.collection
        if change.op == "rename":
            return CollectionGone(
                f"the collection {name!r} was renamed to {change.renamed_to!r}; the watch ends"
            )
        if change.op == "dropDatabase":
            return CollectionGone(f"the database holding {name!r} was dropped; the watch ends")
        return CollectionGone(f"the collection {name!r} was dropped; the watch ends")

    def _look(self, force: bool = False) -> None:
        """Every few seconds while quiet: warn once if the collection does not exist yet, and
        end the watch if it was dropped without an event (nx-27017 sends none)."""
        now = self.clock()
        if not force and now < self.next_look:
            return
        self.next_look = now + LOOK_EVERY
        name = self.options.collection
        if self.seen_existing:
            if collection_gone(self.store, name):
                raise CollectionGone(f"the collection {name!r} was dropped; the watch ends")
            return
        db_there, there = collection_exists(self.store, name)
        if there:
            self.seen_existing = True
            return
        if not self.warned_missing:
            self.warned_missing = True
            db = self.store.db.name
            what = (
                f"the collection {db}.{name} does not exist yet"
                if db_there
                else f"the database {db!r} does not exist yet (no collections)"
            )
            self.hooks.warning(f"{what}; waiting for it (check the name, --db or the URI)")

    # --- reading what is already there ---

    def _read_log(self, *, handover: bool = False) -> ReadMark | None:
        """Show the log's events not shown yet, in log order; where the read ended."""
        assert self.ledger is not None
        if self.options.ops and "insert" not in self.options.ops:
            return None
        read = LogRead(
            self.store,
            self.options.filters(),
            self.ledger.read_from(),
            handover=handover,
            clock=self.clock,
            before_fetch=self.hooks.written,
        )
        self.shown_by_read = 0
        for doc in read:
            if self.ledger.admit_read(doc):
                self.shown_by_read += 1
                ts = doc.get("ts")
                when = ts if isinstance(ts, datetime) else None
                stored = doc.stored if type(doc) is Canonical else doc
                key = {name: stored.get(name) for name in self.fields}
                change = Change("insert", self.options.collection, key, doc, when)
                entry = (event_ts(doc), self.ledger.ident(doc)) if self._checkpoint_base else None
                if self.polling:
                    self.shown_lately.add(self.ledger.position(doc)[1])
                self._deliver(change, entry)
            self._check_idle()
        return read.mark

    shown_by_read = 0

    def _scan_collection(self) -> ReadMark | None:
        """--from start on another collection: its documents as inserts, then live.

        Inserts that the stream also delivers (committed after it opened and read by the scan)
        are dropped while they match what was read, until the server says the stream has
        passed the scan.
        """
        if self.options.ops and "insert" not in self.options.ops:
            return None
        self.scan_keys = {}
        for doc in scan_collection(
            self.store, self.options.collection, log_query({}), self.hooks.written
        ):
            key = {name: doc.get(name) for name in self.fields}
            self.scan_keys[key_text(key)] = doc_hash(doc)
            self._deliver(Change("insert", self.options.collection, key, doc, None))
            self._check_idle()
        return ReadMark(None, self.clock())

    # --- polling (servers without change streams) ---

    def _poll_session(self) -> None:
        assert self.ledger is not None
        self._look(force=True)
        self._reconnected()
        if self.dirty:
            self._save()
        self._announce()
        self.fresh = False
        self.reached = True
        idle_since = self.clock()
        self._late_in_poll(first=True)
        while True:
            self._check_idle()
            self._read_log()
            self._late_in_poll()
            if not self.options.follow:
                raise _Stop
            now = self.clock()
            if self.shown_by_read:
                idle_since = now
            else:
                self.hooks.written()
                self._flush()
                self._look()
                self._beat()
                self.sleep(poll_pause(now - idle_since))

    def _late_in_poll(self, *, first: bool = False) -> None:
        """Polling: show events that landed below the settled position, as the stream path
        shows a 'late' one (docs/handover.md, "Following by polling").

        About once a second, what was inserted since the last look (natural order, newest
        first, back to the last look's newest): those at or below the settled position that
        were not shown landed late. `first`: only note where the log ends now.
        """
        ledger = self.ledger
        assert ledger is not None
        now = self.clock()
        if not first and now < self.next_late_look:
            return
        self.next_late_look = now + 1.0
        marker = None if first else self.poll_marker
        if not first and marker is None:
            first = True  # the log was empty at the last look
        docs, self.poll_marker, reached = inserted_since(self.store, marker, LATE_LOOK_MAX)
        shown_since, self.shown_before = self.shown_before | self.shown_lately, self.shown_lately
        self.shown_lately = set()
        if first:
            return
        if not reached and not self.warned_late:
            self.hooks.warning(
                f"more than {LATE_LOOK_MAX:,} events landed between two polls; an event among "
                "them with a ts older than those shown would not be found"
            )
        filters = self.options.filters()
        settled = ledger.settled
        for doc in reversed(docs):  # oldest first
            if settled is None or not _matches(doc, filters):
                continue
            pos = ledger.position(doc)
            if pos > settled or pos[1] in shown_since or ledger.holds(pos[1]):
                continue  # the log read shows it (or did)
            self._warn_late(doc)
            ts = doc.get("ts")
            when = ts if isinstance(ts, datetime) else None
            stored = doc.stored if type(doc) is Canonical else doc
            key = {name: stored.get(name) for name in self.fields}
            entry = (event_ts(doc), ledger.ident(doc)) if self._checkpoint_base else None
            self.shown_lately.add(pos[1])
            self._deliver(Change("insert", self.options.collection, key, doc, when), entry)

    def _warn_late(self, doc: Mapping[str, Any]) -> None:
        if self.warned_late or type(doc.get("ts")) is not datetime:
            # A document without a date ts is not an event (shown as one, or skipped): it has
            # no place in time order to be late from.
            return
        self.warned_late = True
        self.hooks.warning(
            f"event {doc.get('_id')!r} has a ts more than {MARGIN.total_seconds():g} s "
            "older than events already shown (imported, or a publisher's clock is off); "
            f"{self.hooks.late}"
        )

    # --- showing and saving ---

    def _deliver(self, change: Change, shown: tuple[datetime, Any] | None = None) -> None:
        """Print a change, then save it (a log event: `shown`, its ts and id) if checkpointing."""
        if shown is not None:
            self.unsaved.append(shown)
        with CTRL_C.held:  # a Ctrl-C now waits until the change is printed and saved
            acknowledged = self.hooks.deliver(change) is not False
            self.count += 1
            self.last_change = self.clock()
            if self.options.checkpoint is not None:
                self.dirty = True
                if acknowledged:
                    self._save()
        if self.options.limit is not None and self.count >= self.options.limit:
            raise _Stop

    def _check_idle(self, extra: float = 0.0) -> None:
        if self.hooks.stopped():
            raise _Stop
        timeout = self.options.idle_timeout
        if timeout is not None and self.clock() + extra - self.last_change >= timeout:
            raise _Stop

    def _save(self) -> None:
        """Save what was printed: log events into the window, else the resume token.

        Never past a change that a consumer has not acknowledged yet (Hooks.pending), nor
        past one still in an output buffer (Hooks.written first)."""
        if self._checkpoint_base is None or self.hooks.pending():
            return
        self.hooks.written()
        if self.ledger is not None:
            if self.unsaved and self.hooks.batched and len(self.unsaved) > 64:
                # An acknowledged batch (--exec): most of it is below the ledger's window
                # already, where the checkpoint document's settled position covers it. Only
                # the ids the window still holds are recorded, then the document is rewritten.
                # Killed in between, a restart delivers part of the batch again: at least once.
                self.ledger.tidy()
                held = [e for e in self.unsaved if self.ledger.holds(id_key(e[1]))]
                record_shown(self.store, self._checkpoint_base["_id"], held)
                self.unsaved = []
                self.dirty = False
                self._write_checkpoint()
                return
            if self.unsaved:
                record_shown(self.store, self._checkpoint_base["_id"], self.unsaved)
                self.saved_since += len(self.unsaved)
                self.unsaved = []
            self.dirty = False
            if self.saved_since >= max(256, len(self.ledger)) or (
                self.saved_since and self.clock() - self.written_at >= 1.0
            ):
                self._write_checkpoint()
            return
        if self.token is None:
            # Still reading the collection (--from start): a restart reads it again.
            self.dirty = False
            return
        doc = dict(self._checkpoint_base)
        doc["token"] = self.token
        doc["position_ts"] = self.position_ts
        self._store_checkpoint(doc)
        self.dirty = False

    def _write_checkpoint(self) -> None:
        """Rewrite a log checkpoint's document, then drop the window ids it now covers.

        Every max(256, window) printed events, or second: amortised, a few bytes per event.
        """
        assert self.ledger is not None and self._checkpoint_base is not None
        snap = self.ledger.snapshot()
        doc = {**self._checkpoint_base, **{k: v for k, v in snap.items() if k != "recent"}}
        self._store_checkpoint(doc)
        if snap["settled"] is not None:
            forget_below(self.store, doc["_id"], snap["settled"]["ts"])
        self.saved_since = 0
        self.written_at = self.clock()

    # --- liveness ---

    def _store_checkpoint(self, doc: dict[str, Any]) -> None:
        """Save a checkpoint document with the watch's liveness in it."""
        if self.pulse is not None:
            self._count_into(self.pulse)
            doc["liveness"] = self.pulse.record()
        save_checkpoint(self.store, doc)
        self.saved_doc = doc

    def _count_into(self, pulse: Pulse) -> None:
        figures = self.hooks.figures(self.count) if self.hooks.figures is not None else None
        if figures is None:
            pulse.handled = self.count
            return
        pulse.handled = int(figures.get("handled", self.count))
        pulse.retries = int(figures.get("retries", 0))
        pulse.dead_letters = int(figures.get("dead_letters", 0))

    def _beat(self) -> None:
        """Between changes and while quiet: the hooks' tick, and the watch's heartbeat."""
        self.hooks.tick()
        self._heartbeat()

    def _beat_quietly(self) -> None:
        """The heartbeat for a consumer that holds the watch up: best effort, within a second
        (an outage must not hold up the running CMD's wait)."""
        if self.pulse is None or self.saved_doc is None or not self.pulse.due():
            return
        with contextlib.suppress(Exception), self.store.quickly(1.0):
            self._heartbeat()

    def _heartbeat(self, state: str = "running", error: str | None = None) -> None:
        """While nothing else is written: the last checkpoint document again, with fresh
        liveness, at most every heartbeat (a state other than running: now).

        The same document, so its position never moves past what was acknowledged."""
        pulse = self.pulse
        if pulse is None or self.saved_doc is None:
            return
        if state == "running" and not pulse.due():
            return
        if (
            state == "running"
            and self.ledger is not None
            and self.saved_since
            and not self.dirty
            and not self.hooks.pending()
        ):
            self._write_checkpoint()  # shown events are in the window: the document catches up
            return
        self._count_into(pulse)
        doc = {**self.saved_doc, "liveness": pulse.record(state, error)}
        save_checkpoint(self.store, doc)
        self.saved_doc = doc


def _matches(doc: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Whether a log event passes --type and --stream."""
    types, streams = filters.get("types"), filters.get("streams")
    return (not types or doc.get("type") in types) and (not streams or doc.get("stream") in streams)


def _describe(filters: Any) -> str:
    if not isinstance(filters, Mapping):
        return "none"
    parts = [
        f"--{flag} {', '.join(filters.get(name) or [])}"
        for flag, name in (("type", "types"), ("stream", "streams"), ("op", "ops"))
        if filters.get(name)
    ]
    return "; ".join(parts) or "no filters"


def watch(store: Store, options: WatchOptions, hooks: Hooks) -> int:
    """Follow a collection as `evstream watch` does; returns the number of changes shown."""
    return Watcher(store, options, hooks).run()


# --- what `watch` and the API's `follow` put around a watch: parts, handlers -------------------

# How many events' streams a partitioned watch remembers, so that a delete (which carries no
# document) goes to the part of the stream its event was in: about 100 bytes each.
REMEMBERED_STREAMS = 100_000


class PartOwner:
    """Which changes belong to one part of N (`evstream.events.part_of_change`): for
    `watch --partition` and the API's `follow(partition=…)` (docs/delivery.md, "Partitions").

    A change goes to its stream's part, whatever the stream's type. A delete carries no
    document: on a log sharded on `stream` its document key names the stream; otherwise the
    stream is the one this watch saw that event in (every part is handed every change, and
    remembers the streams of the last REMEMBERED_STREAMS), and the delete of an event it never
    saw goes to NO_STREAM_PART, as a document without a stream does. In another collection (a
    projection's), a document's `_id` is its stream.
    """

    def __init__(
        self, part: tuple[int, int], remember: int = REMEMBERED_STREAMS, log: str = EVENTS
    ) -> None:
        self.part = part
        self.log = log  # the event log's collection (the field map's, docs/adopting.md)
        self.remember = remember
        self.streams: dict[str, Any] = {}  # an event's _id (as text) → its stream, oldest first

    def owns(self, change: Change) -> bool:
        """Whether `change` is this part's; remembers the stream of a change with a document."""
        if change.collection != self.log:  # a projection's documents: keyed by their stream
            return part_of_change(self.part[1], change.key, change.doc, log=False) == self.part[0]
        ident = change.key.get("_id")
        mark = ident if type(ident) is str else "\0" + canonical_text(ident)
        seen = None
        stream = None if change.doc is None else change.doc.get("stream")
        if stream is not None:
            streams = self.streams
            if mark not in streams and len(streams) >= self.remember:
                del streams[next(iter(streams))]
            streams[mark] = stream
        elif change.op == "delete":
            seen = self.streams.pop(mark, None)
        else:
            seen = self.streams.get(mark)
        return part_of_change(self.part[1], change.key, change.doc, seen=seen) == self.part[0]


def exec_handler(
    store: Store,
    options: ExecOptions,
    *,
    notice: Callable[[str], None] = lambda message: None,
    stderr: IO[str] | None = None,
) -> Executor:
    """The `watch --exec` executor, its dead letters kept in the store under the checkpoint's
    name (`ExecOptions.check` makes sure there is one)."""
    from evstream.delivery import Executor
    from evstream.storage.delivery import dead_letter

    checkpoint = options.checkpoint or ""

    def set_aside(lines: list[str], ids: list[Any], attempt: Any, attempts: int) -> None:
        dead_letter(store, checkpoint, lines, ids, attempt.reason, attempts, attempt.last_stderr)

    return Executor(options, stderr=stderr or sys.stderr, notice=notice, dead_letter=set_aside)


def upcast_changes(
    upcasters: Callable[[Mapping[str, Any]], Mapping[str, Any]], log: str, versioned: bool = True
) -> Callable[[Change], Change]:
    """A change with its event upcast (`watch --exec`, and `watch --upcast`): only events of the
    log (`log`) are, as canonical events; anything else is handed on as it is
    (docs/projections.md, "Upcasting")."""
    from evstream.events import event_problem

    def upcast(change: Change) -> Change:
        doc = change.doc
        if doc is None or change.collection != log or event_problem(doc, versioned) is not None:
            return change
        new = upcasters(doc)
        return change if new is doc else replace(change, doc=dict(new))

    return upcast


def delivery_hooks(
    show: Callable[[Change], bool | None],
    *,
    part: tuple[int, int] | None = None,
    executor: Executor | None = None,
    notice: Callable[[str], None] = lambda message: None,
    warning: Callable[[str], None] = lambda message: None,
    written: Callable[[], None] = lambda: None,
    log: str = EVENTS,
) -> Hooks:
    """Where a watch's changes go: each to `show` (printed; or handed to `executor`, which
    acknowledges them a batch at a time); with `part`, only that part's (`PartOwner`; `log`:
    the event log's collection)."""
    if executor is None:
        pending: Callable[[], bool] = lambda: False  # noqa: E731
    else:
        pending = lambda: executor.pending  # noqa: E731
    deliver = show
    others = [0]  # changes of other parts, handed over and passed by
    if part is not None:
        owner = PartOwner(part, log=log)

        def deliver(change: Change) -> bool | None:
            if not owner.owns(change):
                others[0] += 1
                return not pending()  # another part's: nothing to do, nothing to wait for
            return show(change)

    def figures(handed: int) -> dict[str, int]:
        """What the liveness reports (docs/operating.md): this part's changes only."""
        if executor is None:
            return {"handled": handed - others[0]}
        return {
            "handled": executor.delivered + executor.dead,
            "retries": executor.retries,
            "dead_letters": executor.dead,
        }

    def flush(everything: bool) -> bool:
        if executor is None:
            return True
        if everything or executor.due():
            executor.flush()
        return not executor.pending

    return Hooks(
        deliver=deliver,
        notice=notice,
        warning=warning,
        pending=pending,
        flush=flush,
        batched=executor is not None,
        written=written,
        figures=figures,
    )
