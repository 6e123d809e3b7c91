"""The Python API: `evstream.connect()` and the client it returns (docs/python-api.md).

The client is a thin layer over the services the commands use (publishing, watching,
projection, check, overview): the same checks, batches, handover and checkpoints, with
evstream's own exceptions (each with the CLI's exit code) and no driver exception.

Threads: one client may be used from several threads at once. They share the pymongo client
(its connection pool) and whether the log's indexes were checked; everything else a call needs
is its own (`append_many`'s cache of stream heads lives for that call, each `read` has its
cursor, each `follow` its watch thread and ledger).
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Generator, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

from evstream.errors import EvstreamError, InvalidInput
from evstream.settings import Settings, resolve_settings

if TYPE_CHECKING:
    from evstream.projections import Projection
    from evstream.storage import Store
    from evstream.watching import Change, WatchOptions

# Notices (the dev store started, a rebuild in full and why) at INFO, warnings (secrets
# redacted, documents skipped) at WARNING: what the CLI says on stderr.
logger = logging.getLogger("evstream")

Event = dict[str, Any]
Part = tuple[int, int]


def connect(uri: str | None = None, db: str | None = None, *, context: str | None = None) -> Client:
    """A client for the event log at `uri` (else EVSTREAM_URI, MONGODB_URI, else the embedded dev
    store, started if need be) in database `db` (else EVSTREAM_DB, the URI's, else evstream)."""
    settings = resolve_settings(uri, db, context=context)
    from evstream.storage import connect as open_store
    from evstream.storage import translate_errors

    with translate_errors(settings.uri):
        store = open_store(settings, logger.info, logger.warning)
    return Client(store, settings)


class Client:
    """An open connection to one database's event log; see docs/python-api.md."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self.settings = settings
        self._lock = threading.Lock()
        self._closed = False

    # --- what it is connected to ---

    @property
    def database(self) -> str:
        """The database's name."""
        return self._store.db.name

    @property
    def description(self) -> str:
        """Which server this is, password masked (the embedded dev store, or MongoDB at …)."""
        return self._store.description

    # --- writing ---

    def append(
        self,
        type: str,
        stream: str,
        data: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        id: str | None = None,
        expected_version: int | None = None,
        *,
        keep_secrets: bool = False,
    ) -> Event:
        """Append one event at its stream's end (or only as version `expected_version` + 1, else
        `Conflict`); returns the stored event. An `id` already stored is stored once: the
        stored event is returned."""
        from evstream.publishing import publish_one

        with self._errors():
            return publish_one(
                self._ready(),
                {
                    "type": type,
                    "stream": stream,
                    "data": {} if data is None else _as_dict(data),
                    "meta": None if meta is None else _as_dict(meta),
                    "id": id,
                    "expected_version": expected_version,
                },
                keep_secrets=keep_secrets,
                warning=logger.warning,
            ).doc

    def append_many(
        self,
        events: Iterable[Mapping[str, Any]],
        *,
        keep_secrets: bool = False,
        skip_invalid: bool = False,
    ) -> dict[str, Any]:
        """Append events given as objects with the fields of `publish --file`'s lines (type,
        stream, data, meta, id, expected_version), in batches; returns the summary that
        `publish --file -o json` prints. A list is checked whole before anything is written;
        any other iterable is read as it comes (memory stays flat)."""
        from evstream.publishing import Hooks, publish_objects

        with self._errors():
            report = publish_objects(
                self._ready(),
                events,
                keep_secrets=keep_secrets,
                skip_invalid=skip_invalid,
                hooks=Hooks(warning=logger.warning),
            )
        return report.as_dict()

    # --- reading ---

    def read(
        self,
        stream: str | None = None,
        types: str | Iterable[str] | None = None,
        since: datetime | str | None = None,
    ) -> Iterator[Event]:
        """The stored events (of one stream, of these types, with ts at or after `since`) in
        log order, as stored; read in batches as the iterator is consumed."""
        filters = {
            "types": _names(types),
            "streams": [] if stream is None else [stream],
            "ops": [],
        }
        lower = _since(since)
        store = self._open()
        return self._read(store, filters, lower)

    def _read(
        self, store: Store, filters: dict[str, list[str]], lower: datetime | None
    ) -> Iterator[Event]:
        from evstream.storage.changes import LogRead

        with self._errors():
            yield from LogRead(store, filters, lower)

    def follow(
        self,
        checkpoint: str | None = None,
        start: str | datetime = "now",
        types: str | Iterable[str] | None = None,
        streams: str | Iterable[str] | None = None,
        partition: str | Part | None = None,
        *,
        idle_timeout: float | None = None,
    ) -> Follow:
        """The log's changes as they come, with `watch`'s handover (history, then live, no gap,
        no duplicate) and, with `checkpoint`, its checkpoint: a change is saved as handled
        when the next one is asked for, or when the generator is closed (docs/python-api.md)."""
        from evstream.delivery import partition_checkpoint
        from evstream.watching import WatchOptions, parse_start

        part = _part(partition)
        if part is not None and checkpoint is None:
            raise InvalidInput("partition needs a checkpoint name: each part keeps its own")
        if isinstance(start, datetime):
            begin: str | datetime = _since(start) or "now"
        else:
            begin = parse_start(start)
        if idle_timeout is not None and idle_timeout < 0:
            raise InvalidInput("idle_timeout must be 0 or more seconds")
        options = WatchOptions(
            types=_names(types),
            streams=_names(streams),
            start=begin,
            checkpoint=partition_checkpoint(checkpoint, part) if checkpoint else None,
            idle_timeout=idle_timeout,
        )
        store = self._open()
        if checkpoint is not None:
            from evstream.delivery import check_parts
            from evstream.storage.delivery import checkpoint_names

            with self._errors():
                check_parts(checkpoint, part, checkpoint_names(store))
        return Follow(store, options, part)

    # --- read models and the log's health ---

    def rebuild(
        self,
        projection: Projection | str,
        incremental: bool = False,
        partition: str | Part | None = None,
        dry_run: bool = False,
        *,
        margin: float | None = None,
    ) -> dict[str, Any]:
        """Rebuild a projection (a `Projection`, or the name of a built-in one or of one in the
        configured modules) as `evstream rebuild` does; returns its `-o json` summary."""
        from evstream.projection import DEFAULT_MARGIN, run_rebuild

        part = _part(partition)
        with self._errors():
            proj = self._projection(projection)
            report = run_rebuild(
                self._open(),
                proj,
                incremental=incremental,
                dry_run=dry_run,
                margin=DEFAULT_MARGIN if margin is None else margin,
                part=part,
                notice=logger.info,
                warning=logger.warning,
            )
        return report.as_dict()

    def state(self, projection: Projection | str, key: str) -> dict[str, Any] | None:
        """A projection's document for a stream (or, keyed, a key's value) as readers see it,
        complete (docs/projections.md); None when it has none."""
        from evstream.storage.projections import find_documents

        with self._errors():
            proj = self._projection(projection)
            return find_documents(self._open(), proj.collection, [key]).get(key)

    def check(self) -> dict[str, Any]:
        """The log's health, as `evstream check -o json` reports it (`healthy`, `findings` …)."""
        from evstream.check import Check

        with self._errors():
            return Check(self._open()).run().as_dict()

    def status(self) -> dict[str, Any]:
        """What is in the store, as `evstream status -o json` reports it."""
        from evstream.overview import gather

        with self._errors():
            store = self._open()
            info = gather(store, home=self.settings.data_home if store.embedded else None)
        if info.get("not_events"):
            from evstream.events import Skipped

            skipped = Skipped(dict(info["not_events"]["kinds"]), info["not_events"]["sample_ids"])
            logger.warning("%s", skipped.line())
        return info

    # --- closing ---

    def close(self) -> None:
        """Close the connection; the client cannot be used afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<evstream.Client {self.description}, database {self.database}>"

    # --- plumbing ---

    def _open(self) -> Store:
        if self._closed:
            raise InvalidInput("this evstream client is closed")
        return self._store

    def _projection(self, projection: Projection | str) -> Projection:
        """A projection, or the one of this name: built in, or in the configured modules (the
        config file's `projections`, EVSTREAM_PROJECTIONS), as `evstream rebuild NAME` finds it."""
        if not isinstance(projection, str):
            return projection
        from evstream.projections import load_projection

        return load_projection(projection, configured=self.settings.projections)

    def _ready(self) -> Store:
        """The store, its log's indexes checked (once per client, whichever thread is first)."""
        store = self._open()
        if not store.indexes_checked:
            from evstream.storage import ensure_indexes

            with self._lock, self._errors():
                ensure_indexes(store)
        return store

    def _errors(self) -> Any:
        from evstream.storage import translate_errors

        return translate_errors(self.settings.uri)


# --- follow ------------------------------------------------------------------------------------

_END = object()


class _Channel:
    """What a follow's watch thread and its consumer share: one change handed over at a time.

    The watch thread holds this, never the `Follow`, so a `Follow` that its consumer drops is
    collected, and its finalizer ends the watch.
    """

    def __init__(self, part: Part | None) -> None:
        from evstream.watching import PartOwner

        self.owner = None if part is None else PartOwner(part)
        self.changes: queue.SimpleQueue[Any] = queue.SimpleQueue()  # a Change, an error or _END
        self.replies: queue.SimpleQueue[bool] = queue.SimpleQueue()  # True: handled; False: not
        self.stop = threading.Event()
        self.unhandled = False  # a change handed over was not handled: the watch saves no more

    def deliver(self, change: Change) -> bool:
        """The watch's deliver hook: hand the change over, and wait until the consumer asks for
        the next one (True: the watch saves it) or goes away (False: it is not saved)."""
        if self.stop.is_set():
            self.unhandled = True
            return False
        if self.owner is not None and not self.owner.owns(change):
            return True  # another part's: nothing to do
        self.changes.put(change)
        if self.replies.get():
            return True
        self.unhandled = True
        return False

    def end(self, handled: bool) -> None:
        """The consumer is done: with the change it holds handled (closed) or not (dropped, or
        an exception)."""
        self.stop.set()  # first: after the reply the watch must find it set
        self.replies.put(handled)


def _watch(channel: _Channel, store: Store, options: WatchOptions) -> None:
    """The watch thread: run `evstream watch`'s Watcher with the channel as its consumer."""
    from evstream.storage import translate_errors
    from evstream.watching import Hooks, Watcher

    hooks = Hooks(
        deliver=channel.deliver,
        notice=logger.info,
        warning=logger.warning,
        pending=lambda: channel.unhandled,
        stopped=channel.stop.is_set,
    )

    def pause(seconds: float) -> None:  # between reconnection attempts: ends when closed
        channel.stop.wait(seconds)

    try:
        with translate_errors(store.uri):
            Watcher(store, options, hooks, sleep=pause).run()
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
        channel.changes.put(exc)
    else:
        channel.changes.put(_END)


class Follow(Generator["Change", None, None]):
    """The generator `Client.follow` returns: iterate it for changes (`watching.Change`: op,
    collection, key, doc, when).

    A change counts as handled when the next one is asked for, or when `close()` is called
    (or a `with` block ends without an exception); then its checkpoint is saved. Dropped
    otherwise (an exception, a `break` without `close()`, the process killed), the change
    it held is delivered again by the next follow with the same checkpoint: at least once.
    """

    def __init__(self, store: Store, options: WatchOptions, part: Part | None) -> None:
        self._store = store
        self._options = options
        self._channel = _Channel(part)
        self._thread: threading.Thread | None = None
        self._holding = False  # a change was handed to the consumer, not yet handled
        self._done = False
        self._finalizer = weakref.finalize(self, self._channel.end, False)

    def __iter__(self) -> Follow:
        return self

    def __next__(self) -> Change:
        if self._done:
            raise StopIteration
        if self._thread is None:
            self._start()
        if self._holding:
            self._holding = False
            self._channel.replies.put(True)
        while True:
            try:
                item = self._channel.changes.get(timeout=0.5)
                break
            except queue.Empty:
                continue
        if item is _END:
            self._finish(handled=True, wait=True)
            raise StopIteration
        if isinstance(item, BaseException):
            self._finish(handled=True, wait=True)
            raise item
        self._holding = True
        return item  # type: ignore[no-any-return]

    def send(self, value: None) -> Change:
        """As next(): the change held so far counts as handled."""
        return self.__next__()

    def throw(  # type: ignore[override]
        self,
        typ: type[BaseException] | BaseException,
        val: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> Change:
        """End the follow without handling the change held (it comes again), then raise."""
        self._finish(handled=False, wait=True)
        if isinstance(typ, BaseException):
            raise typ
        raise (val if val is not None else typ())

    def close(self) -> None:
        """End the follow: the change held counts as handled, and the checkpoint is saved."""
        self._finish(handled=True, wait=True)

    def __enter__(self) -> Follow:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # An exception (Ctrl-C included) leaves the change held unhandled, and does not wait
        # out an outage for the watch thread to end.
        self._finish(handled=exc is None, wait=exc is None)

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=_watch,
            args=(self._channel, self._store, self._options),
            name="evstream-follow",
            daemon=True,
        )
        self._thread.start()

    def _finish(self, *, handled: bool, wait: bool) -> None:
        if self._done:
            return
        self._done = True
        self._finalizer.detach()
        self._channel.end(handled and self._holding)
        self._holding = False
        if self._thread is not None:
            # Waiting, the last save is done when this returns; otherwise a bounded wait (the
            # watch's last write is bounded too: Watcher._finish).
            self._thread.join(None if wait else 2.5)


# --- arguments ---------------------------------------------------------------------------------


def _names(value: str | Iterable[str] | None) -> list[str]:
    """A name or names (types, streams) as a list; one string is one name."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names = list(value)
    for name in names:
        if not isinstance(name, str):
            raise InvalidInput(f"expected names as strings, got {type(name).__name__}")
    return names


def _as_dict(value: Any) -> Any:
    """A mapping as the dict an event holds (anything else is left for the checks to refuse)."""
    return dict(value) if isinstance(value, Mapping) and type(value) is not dict else value


def _since(value: datetime | str | None) -> datetime | None:
    """A time to read from: a datetime (naive means local time, as --from) or ISO-8601 text."""
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.astimezone()
        return when.astimezone(timezone.utc)
    from evstream.watching import parse_start

    parsed = parse_start(value)
    if not isinstance(parsed, datetime):
        raise InvalidInput(f"since must be a time, not {value!r}")
    return parsed


def _part(value: str | Part | None) -> Part | None:
    """`partition` as (I, N): 'I/N' or a tuple; None for none (or 1/1)."""
    from evstream.events import parse_partition

    if value is None or isinstance(value, str):
        return parse_partition(value)
    if not (isinstance(value, tuple) and len(value) == 2):
        raise InvalidInput(f"partition takes 'I/N' or (I, N), not {value!r}")
    return parse_partition(f"{value[0]}/{value[1]}")


__all__ = ["Client", "EvstreamError", "Follow", "connect"]
