"""What a watch asks of the server: change streams, the log read in ts order, checkpoints and
their window, and how far a checkpoint is behind (docs/handover.md).

Services get evstream errors and plain values from here, never driver objects: a lost
connection is `StreamInterrupted`, lost change history `ChangeHistoryLost`, a server without
change streams `NoChangeStreams`, a driver's own resume that may have missed changes
`HistoryGap`. Whatever a server does differently comes from the store's
adapter (`MongoStore` and its `# --- watching ---` methods, overridden by `Nx27017Store`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from evstream.errors import (
    EvstreamError,
    FeatureUnsupported,
    HistoryLost,
    ServerUnreachable,
    Transient,
)
from evstream.fieldmap import DEFAULT, FieldMap
from evstream.storage.codec import aware, id_key
from evstream.storage.errors import (
    NO_CHANGE_STREAMS_CODES,
    UNAUTHORIZED,
    driver_message,
    history_lost_name,
    is_retryable,
    server_message,
    translate_errors,
)
from evstream.storage.mongo import CHECKPOINTS, OWN_PREFIX, Doc, MongoStore

UTC = timezone.utc
# The ids of a log checkpoint's window: one small document per printed event, so that saving
# after every change stays one small insert however busy the log is (see `record_shown`).
CHECKPOINT_WINDOW = OWN_PREFIX + "checkpoint_window"
# Operations that end a change stream on the watched collection.
INVALIDATING_OPS = ("drop", "dropDatabase", "invalidate", "rename")
MIN_TS = datetime(1970, 1, 1, tzinfo=UTC)


# --- errors ------------------------------------------------------------------------------------


class StreamInterrupted(Transient):
    """A passing condition (lost connection, restart, election): worth trying again.

    `translated` is the error to show if the server was never reached at all.
    """

    def __init__(
        self, message: str, translated: EvstreamError, *, connection: bool, gap: str | None = None
    ) -> None:
        super().__init__(message)
        self.translated = translated
        self.connection = connection  # the connection itself failed (not a server's refusal)
        # What the server's change history may miss from the outage (see HistoryGap), or None.
        self.gap = gap


class HistoryGap(Exception):
    """pymongo resumed a change stream by itself across a lost connection, on a server whose
    change history may miss what was written meanwhile (`MongoStore.driver_resume_is_exact`),
    and the caller does not read the collection again: it goes on with `change` (the one the
    same poll got, or None) and says `message` once (docs/storage.md, "Lost connections")."""

    def __init__(self, message: str, change: LiveChange | None) -> None:
        super().__init__(message)
        self.message = message
        self.change = change


class ChangeHistoryLost(HistoryLost):
    """The server's change history no longer reaches the stream's position (286, 260, 280,
    136, 40576); `name` is the condition's name."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class NoChangeStreams(FeatureUnsupported):
    """The server has no change streams (a standalone mongod, code 40573)."""


def guarded(uri: str | None = None) -> _Guarded:
    """Driver errors inside as the evstream errors above (or translate_errors' own)."""
    return _Guarded(uri)


class _Guarded:
    """`guarded`'s context manager: a class, as it wraps every change a watch reads (a
    generator-based one costs about a microsecond each time)."""

    __slots__ = ("uri",)

    def __init__(self, uri: str | None) -> None:
        self.uri = uri

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, PyMongoError):
            raise _translate(exc, self.uri) from None
        return False


def _translate(exc: PyMongoError, uri: str | None) -> EvstreamError:
    name = history_lost_name(exc)
    if name is not None:
        return ChangeHistoryLost(server_message(exc)[:200], name)  # type: ignore[arg-type]
    if isinstance(exc, OperationFailure) and exc.code in NO_CHANGE_STREAMS_CODES:
        return NoChangeStreams(server_message(exc)[:200])
    translated: EvstreamError
    try:
        with translate_errors(uri):
            raise exc
    except EvstreamError as err:
        translated = err
    if is_retryable(exc):
        reason = driver_message(exc, 160)
        if isinstance(exc, OperationFailure) and not isinstance(exc, ConnectionFailure):
            reason = server_message(exc)[:160]
        return StreamInterrupted(reason, translated, connection=isinstance(exc, ConnectionFailure))
    return translated


# --- where the server says a stream has got --------------------------------------------------


@dataclass(frozen=True)
class ReadMark:
    """Where a log read (or a collection scan) ended: the server's operation time for its
    last reply where the server gives one, and the local clock when it ended."""

    cluster_time: Any
    local: float


@dataclass(frozen=True)
class Caught:
    """An empty answer from the change stream: how far the server says it has looked (its
    post-batch resume token's time, where the server gives one) and when it was asked."""

    cluster_time: Any
    asked_at: float


@dataclass(slots=True)
class LiveChange:
    """One change from a change stream, with the server's quirks already undone."""

    op: str
    key: dict[str, Any]
    doc: dict[str, Any] | None
    wall: datetime | None
    token: Any
    cluster_time: Any
    renamed_to: str | None = None
    update: dict[str, Any] | None = None  # an update's updateDescription: what it changed


def stream_past_read(mark: ReadMark, seen: LiveChange | Caught) -> bool:
    """Whether the stream has delivered everything committed before the read ended, so no
    event of the read can still come from it (docs/handover.md, "Ending the overlap").

    With cluster times (MongoDB): an empty batch whose post-batch resume token reaches the
    read's operation time, or a change committed after it. Without (nx-27017): an empty
    answer to a getMore sent after the read ended; that server answers at once with all it has.
    """
    if isinstance(seen, Caught):
        if mark.cluster_time is not None and seen.cluster_time is not None:
            return bool(seen.cluster_time >= mark.cluster_time)
        return seen.asked_at >= mark.local
    if mark.cluster_time is not None and seen.cluster_time is not None:
        return bool(seen.cluster_time > mark.cluster_time)
    return False


class ChangeFeed:
    """A change stream on one collection: `poll()` gives the next change or None (an empty
    answer), in commit order. Usable from one reader thread; errors come out translated.

    `rereads`: after `StreamInterrupted` the caller reads the collection again (the log, from
    its ledger). Where pymongo's own resume across a lost connection cannot be trusted
    (nx-27017), such a resume then ends the stream as `StreamInterrupted`; for a caller that
    does not re-read, `HistoryGap` says what may be missing and the stream goes on.
    """

    # Turns the log's stored documents into canonical events on a mapped log; None elsewhere.
    _watched: Callable[[dict[str, Any]], Any] | None = None

    def __init__(self, store: MongoStore, name: str, pipeline: list[dict[str, Any]],
                 resume_after: Any = None, *, rereads: bool = False) -> None:  # fmt: skip
        self.store = store
        self.name = name
        self.rereads = rereads
        fm = store.fieldmap
        # The log's documents as canonical events, where another application shaped it.
        self._watched = fm.watched if fm.translates and name == fm.collection else None
        # The client's lost connections when the stream opened, where a driver resume is not
        # exact: one more later means pymongo may have resumed it by itself since.
        self._losses = None if store.driver_resume_is_exact else store.losses
        self._lost = self._losses.count if self._losses is not None else 0
        self._deferred: Exception | None = None  # poll_batch's error after changes it returned
        with guarded(store.uri):
            self._stream = store.open_changes(name, pipeline, resume_after)

    @property
    def resume_token(self) -> Any:
        """The token a new stream resumes from: the last change's, or the post-batch one."""
        return self._stream.resume_token

    def poll(self) -> LiveChange | None:
        """The next change, or None when the server answered with nothing."""
        with guarded(self.store.uri):
            raw = self._stream.try_next()
        if self._losses is not None and self._losses.count != self._lost:
            self._resumed(raw)
        if raw is None:
            if not self._stream.alive:  # ended by the server without an invalidate event
                raise self._interrupted("the server ended the change stream")
            return None
        return self._change(raw)

    def _resumed(self, raw: Mapping[str, Any] | None) -> None:
        """A connection was lost since the stream opened, so pymongo may have resumed it from
        its old token, on a server that records no changes while no stream is open: what
        was written meanwhile is missing. The log's reader reads it again (`raw`, if any, is
        in that read); any other reader goes on, told once (docs/storage.md)."""
        assert self._losses is not None
        self._lost = self._losses.count
        if self.rereads:
            raise self._interrupted("a restart or a dropped connection cut the change stream off")
        if raw is None and not self._stream.alive:
            return  # poll says the stream ended; the new one gets the same warning
        raise HistoryGap(self._gap(), None if raw is None else self._change(raw))

    def _gap(self) -> str:
        return (
            f"changes to {self.name!r} made while the server was unreachable or restarting "
            f"may be missing: {self.store.product} keeps no change history while no change "
            "stream is open"
        )

    def _interrupted(self, reason: str) -> StreamInterrupted:
        gap = None if self.store.driver_resume_is_exact or self.rereads else self._gap()
        translated = ServerUnreachable(f"lost the connection to the server: {reason}")
        return StreamInterrupted(reason, translated, connection=True, gap=gap)

    def poll_batch(self, most: int = 1000) -> list[LiveChange]:
        """The next change and those after it that the driver already holds (no further round
        trip to the server), at most `most`, in commit order; empty when the server answered
        with nothing. Each goes through `poll`: only the first can wait for the server."""
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        first = self.poll()
        if first is None:
            return []
        changes = [first]
        try:
            while len(changes) < most and _holds_more(self._stream):
                change = self.poll()
                if change is None:
                    break
                changes.append(change)
        except Exception as exc:  # noqa: BLE001 - raised at the next call, after these are shown
            self._deferred = exc
        return changes

    def caught(self, asked_at: float) -> Caught:
        """What the last empty answer says (call right after `poll` gave None)."""
        return Caught(self.store.token_time(self._stream.resume_token), asked_at)

    def _change(self, raw: Mapping[str, Any]) -> LiveChange:
        store = self.store
        op = str(raw.get("operationType"))
        doc = store.change_document(raw)
        if self._watched is not None and doc is not None:
            doc = self._watched(doc)
        key = store.change_key(raw, doc)
        wall = raw.get("wallTime")
        to = (raw.get("to") or {}).get("coll") if op == "rename" else None
        return LiveChange(
            op=op,
            key=key,
            doc=None if op == "delete" else doc,
            wall=wall if isinstance(wall, datetime) else None,
            token=raw.get("_id"),
            cluster_time=store.change_time(raw),
            renamed_to=to,
            update=raw.get("updateDescription")
            if isinstance(raw.get("updateDescription"), dict)
            else None,
        )

    def close(self) -> None:
        """Close the server's cursor (errors closing a dead one do not matter)."""
        with contextlib.suppress(PyMongoError):
            self._stream.close()

    def __enter__(self) -> ChangeFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _holds_more(stream: Any) -> bool:
    """Whether the driver already holds a stream's next change, so asking for it makes no
    round trip. pymongo has no public way to ask; its own ChangeStream asks its cursor so
    (`_has_next`). Anything else (another driver version, a test's fake) says no: changes
    then go one at a time, as before."""
    has_next = getattr(getattr(stream, "_cursor", None), "_has_next", None)
    try:
        return bool(has_next()) if callable(has_next) else False
    except Exception:  # noqa: BLE001 - a driver that changed inside: one at a time
        return False


# --- the log, read in ts order -----------------------------------------------------------------


def log_query(filters: Mapping[str, Any], fm: FieldMap = DEFAULT) -> dict[str, Any]:
    """--type and --stream as a query on the log (on the map's paths)."""
    query: dict[str, Any] = {}
    if filters.get("types"):
        query[fm.type] = {"$in": list(filters["types"])}
    if filters.get("streams"):
        query[fm.stream] = {"$in": list(filters["streams"])}
    return query


def event_ts(doc: Mapping[str, Any]) -> datetime:
    """An event's ts in UTC (the oldest time for a document without a date there)."""
    ts = doc.get("ts")
    return aware(ts) if isinstance(ts, datetime) else MIN_TS


class LogRead:
    """The log's events (with filters) at or after `lower`, in ts order (equal ts in storage
    order, the ts index's own order: MongoDB streams it rather than sorting the log).

    `handover`: the read that a change stream takes over from, on the primary with majority
    read concern, so it holds nothing the stream cannot also show (docs/handover.md).
    After the iteration, `mark` says where the read ended. `before_fetch` is called whenever
    the read is about to wait for the server (everything fetched so far was handed out).
    """

    def __init__(
        self,
        store: MongoStore,
        filters: Mapping[str, Any],
        lower: datetime | None,
        *,
        projection: dict[str, int] | None = None,
        handover: bool = False,
        clock: Any = None,
        before_fetch: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.filters = filters
        self.lower = lower
        self.projection = projection
        self.handover = handover
        self.clock = clock
        self.before_fetch = before_fetch
        self.mark: ReadMark | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        store = self.store
        fm = store.fieldmap
        query = log_query(self.filters, fm)
        lower = self.lower
        if lower is not None:
            query[fm.ts] = store.ts_since(lower)
        collection = store.handover_log() if self.handover else store.events
        projection = self.projection
        if projection is not None and fm.translates:
            projection = {fm.paths().get(name, name): 1 for name in projection}
        with guarded(store.uri):
            session = store.log_session() if self.handover else None
            try:
                cursor = collection.find(query, projection, session=session)
                if fm.translates:
                    cursor = _Watched(cursor, fm.watched)
                with cursor.sort(fm.ts, 1).batch_size(1000) as docs:
                    if self.before_fetch is None:
                        for doc in docs:
                            if lower is None or event_ts(doc) >= lower:
                                yield doc
                    else:
                        yield from _fetching(docs, self.before_fetch, lower)
                local = self.clock() if self.clock is not None else 0.0
                self.mark = ReadMark(store.operation_time(session), local)
            finally:
                if session is not None:
                    session.end_session()


class _Watched:
    """A log cursor whose documents come out as `Canonical` events (a mapped log)."""

    def __init__(self, cursor: Any, convert: Callable[[dict[str, Any]], Any]) -> None:
        self.cursor = cursor
        self.convert = convert

    def sort(self, *args: Any) -> _Watched:
        self.cursor.sort(*args)
        return self

    def batch_size(self, n: int) -> _Watched:
        self.cursor.batch_size(n)
        return self

    @property
    def retrieved(self) -> Any:
        return self.cursor.retrieved

    def __iter__(self) -> Iterator[Any]:
        return map(self.convert, self.cursor)

    def __enter__(self) -> _Watched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cursor.close()


def _fetching(
    cursor: Any, before_fetch: Callable[[], None], lower: datetime | None
) -> Iterator[dict[str, Any]]:
    """A log read's documents (at or after `lower`), calling `before_fetch` whenever the next
    one has to come from the server: the cursor has handed out all it `retrieved`."""
    handed = 0
    docs = iter(cursor)
    while True:
        retrieved = getattr(cursor, "retrieved", None)
        if retrieved is None or handed >= retrieved:
            before_fetch()
        doc = next(docs, None)
        if doc is None:
            return
        handed += 1
        if lower is None or event_ts(doc) >= lower:
            yield doc


def scan_collection(
    store: MongoStore, name: str, query: Doc, before_fetch: Callable[[], None] | None = None
) -> Iterator[Doc]:
    """Every document of a collection matching `query`, in _id order (`before_fetch`: as
    LogRead's)."""
    with guarded(store.uri):
        cursor = store.collection(name).find(query).sort("_id", 1).batch_size(1000)
        with cursor:
            if before_fetch is None:
                yield from cursor
            else:
                yield from _fetching(cursor, before_fetch, None)


def key_fields(store: MongoStore, name: str) -> tuple[str, ...]:
    """The fields of a change's documentKey for this collection (shard key, then _id)."""
    with guarded(store.uri):
        return store.document_key_fields(name)


def collection_exists(store: MongoStore, name: str) -> tuple[bool, bool]:
    """Whether the database and the collection exist yet (both, for a user who may not list
    collections: the watch goes on either way)."""
    with guarded(store.uri):
        try:
            return store.database_exists(), store.collection_exists(name)
        except OperationFailure as exc:
            if exc.code != UNAUTHORIZED:
                raise
            return True, True


def collection_gone(store: MongoStore, name: str) -> bool:
    """Whether the server knows the collection was dropped without telling the stream."""
    with guarded(store.uri):
        return store.collection_gone(name)


# --- checkpoints -------------------------------------------------------------------------------


def load_checkpoint(store: MongoStore, name: str) -> dict[str, Any] | None:
    """The saved checkpoint of this name, or None; a log checkpoint with its window as `recent`."""
    with guarded(store.uri):
        doc = store.db[CHECKPOINTS].find_one({"_id": name})
        if doc is not None and doc.get("collection") == store.log_name:
            window = store.db[CHECKPOINT_WINDOW].find({"c": name}, {"_id": 0, "ts": 1, "id": 1})
            doc["recent"] = [
                [w["ts"], w.get("id")] for w in window if isinstance(w.get("ts"), datetime)
            ]
    return doc


def start_window(store: MongoStore, name: str) -> None:
    """A new log checkpoint's window: empty (a stale one of a deleted checkpoint goes), indexed."""
    with guarded(store.uri):
        window = store.db[CHECKPOINT_WINDOW]
        window.delete_many({"c": name})
        window.create_index([("c", 1), ("ts", 1)])


def record_shown(store: MongoStore, name: str, entries: Iterable[tuple[datetime, Any]]) -> None:
    """Add printed events (ts, id) to a log checkpoint's window."""
    docs = [{"c": name, "ts": ts, "id": raw} for ts, raw in entries]
    with guarded(store.uri):
        if len(docs) == 1:
            store.db[CHECKPOINT_WINDOW].insert_one(docs[0])
        elif docs:
            store.db[CHECKPOINT_WINDOW].insert_many(docs, ordered=False)


def forget_below(store: MongoStore, name: str, settled_ts: datetime) -> None:
    """Delete window ids the checkpoint's settled position now covers (ts below it; keeping a
    few too many is harmless, deleting one the position does not cover would repeat it)."""
    with guarded(store.uri):
        store.db[CHECKPOINT_WINDOW].delete_many({"c": name, "ts": store.ts_before(settled_ts)})


def save_checkpoint(store: MongoStore, doc: dict[str, Any]) -> None:
    """Write a whole checkpoint document, `_id` included, stamped with a BSON date.

    A whole-document replace (not $set), with the `_id` in the replacement: the one write that
    keeps datetimes BSON dates and the upsert's _id on every server evstream runs on.
    """
    doc = {**doc, "updated_at": datetime.now(UTC)}
    with guarded(store.uri):
        store.db[CHECKPOINTS].replace_one({"_id": doc["_id"]}, doc, upsert=True)


def delete_checkpoint(store: MongoStore, name: str) -> bool:
    """Forget a checkpoint and its window; whether there was one."""
    with guarded(store.uri):
        store.db[CHECKPOINT_WINDOW].delete_many({"c": name})
        return store.db[CHECKPOINTS].delete_one({"_id": name}).deleted_count > 0


def list_checkpoints(store: MongoStore) -> list[dict[str, Any]]:
    """Every saved checkpoint: name, collection, updated_at, position_ts, behind (events only).

    `behind` counts the log's events after the checkpoint's newest shown one (with the
    checkpoint's --type/--stream filters); None for other collections.
    """
    rows = []
    with guarded(store.uri):
        saved = list(store.db[CHECKPOINTS].find().sort("_id", 1))
    for doc in saved:
        collection = doc.get("collection")
        row: dict[str, Any] = {
            "name": doc["_id"],
            "collection": collection,
            "updated_at": doc.get("updated_at"),
            "position_ts": None,
            "behind": None,
        }
        if collection == store.log_name:
            pos = doc.get("position") or {}
            ts = pos.get("ts")
            row["position_ts"] = ts if isinstance(ts, datetime) else None
            filters = doc.get("filters") or {}
            if isinstance(ts, datetime):
                row["behind"] = count_after(store, filters, aware(ts), pos.get("id"))
            else:
                origin = doc.get("origin")
                start = aware(origin) if isinstance(origin, datetime) else None
                row["behind"] = count_after(store, filters, start, None, inclusive=True)
        else:
            ts = doc.get("position_ts")
            row["position_ts"] = ts if isinstance(ts, datetime) else None
        rows.append(row)
    return rows


def count_after(
    store: MongoStore,
    filters: Mapping[str, Any],
    ts: datetime | None,
    ident: Any,
    *,
    inclusive: bool = False,
) -> int:
    """How many of the log's events (with these filters) come after (ts, ident) in log order
    (at or after `ts` when inclusive; all of them without a ts)."""
    with guarded(store.uri):
        query = log_query(filters, store.fieldmap)
        return store.count_log_after(query, ts, ident, inclusive=inclusive)


def inserted_since(store: MongoStore, marker: Any, limit: int) -> tuple[list[Doc], Any, bool]:
    """The log's documents inserted after the one whose _id is `marker`, newest first; the
    next marker; whether `marker` was reached (MongoStore.inserted_since)."""
    with guarded(store.uri):
        docs, newest, reached = store.inserted_since(marker, limit)
    if store.fieldmap.translates:
        docs = [store.fieldmap.watched(doc) for doc in docs]
    return docs, newest, reached


def position_key(ts: datetime, ident: Any) -> tuple[datetime, tuple[int, Any]]:
    """(ts, id) as the ledger orders positions."""
    return (ts, id_key(ident))
