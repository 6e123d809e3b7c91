"""`evstream erase`: a stream removed everywhere evstream keeps it (docs/lifecycle.md).

For an erasure request (GDPR Article 17): the stream's events, its document in every
projection, its share of every keyed projection (the keys its events feed, refolded without
them: `evstream.keyed_archive`), its snapshots and archive edge, its event ids in checkpoint
windows and its changes in dead letters. A tombstone in `evstream_tombstones` holds a keyed
hash of the name (HMAC with a per-database secret key), never the name: publishing to the
stream again is refused without the log keeping who it was.

Kill-safe by order: the tombstone comes first (so nothing new lands in the stream), with the
keyed projections' keys to refold while the erase runs; the copies of the stream's event ids
next (found through its events), the events after them, and the refold of those keys last;
each step is a delete or a refold that a second run repeats harmlessly, and the tombstone says
"erased" (and forgets the keys) only at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from evstream.errors import ConcurrencyConflict
from evstream.events import EventInput, check_name
from evstream.keyed_archive import KeyedErase, check_keyed_loaded
from evstream.projections import Projection
from evstream.storage import CHECKPOINTS, Store
from evstream.storage import lifecycle as db
from evstream.storage.changes import CHECKPOINT_WINDOW
from evstream.storage.delivery import DEAD_LETTERS
from evstream.storage.keyed import ARCHIVED_KEYS


def erase_streams(
    store: Store,
    streams: list[str],
    *,
    projections: list[Projection] | None = None,
    notice: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """Erase each stream; the report per stream: what went from which collection, the keyed
    projections' keys refolded, and the archive files that may still hold it. Refuses (exit 2)
    before anything is erased while a keyed projection rebuilt here is not in `projections`."""
    names = [check_name("stream", s) for s in dict.fromkeys(streams)]
    keyed = check_keyed_loaded(store, projections or [])
    key = db.tombstone_key(store)
    return {"streams": [erase_stream(store, key, name, notice, keyed) for name in names]}


def erase_stream(
    store: Store,
    key: bytes,
    stream: str,
    notice: Callable[[str], None],
    keyed: list[Projection] | None = None,
) -> dict[str, Any]:
    """Erase one stream (again, after an interruption: the rest of it)."""
    digest = db.stream_hash(key, stream)
    now = datetime.now(timezone.utc)
    tombstone = db.load_tombstone(store, digest)
    resumed = tombstone is not None and tombstone.get("state") != "erased"
    if tombstone is None:
        tombstone = {"_id": digest, "state": "erasing", "started_at": now}
        db.save_tombstone(store, tombstone)
    elif resumed:
        notice("finishing an interrupted erase of this stream")
    share = KeyedErase(store, keyed or [], stream, digest)
    affected = share.affected(tombstone.get("refold"))
    if any(item["keys"] for item in affected):
        # Remembered while erasing only: once the events are gone, nothing else names the keys.
        tombstone["refold"] = affected
        db.save_tombstone(store, tombstone)
    removed: dict[str, int] = {}

    def note(collection: str, n: int) -> None:
        if n:
            removed[collection] = removed.get(collection, 0) + n

    ids = db.stream_event_ids(store, stream)
    note(CHECKPOINT_WINDOW, db.delete_window_ids(store, ids))
    note(CHECKPOINTS, db.forget_checkpoint_ids(store, ids))
    note(DEAD_LETTERS, db.delete_dead_letters(store, stream, ids))
    for collection in db.projection_collections(store):
        note(collection, db.delete_by(store, collection, {"_id": stream}))
    note(db.ARCHIVED_STREAMS, db.forget_archived_stream(store, stream))
    lost = share.drop_snapshots()
    note(ARCHIVED_KEYS, sum(lost.values()))
    runs = db.forget_archive_streams(store, stream, digest)
    note(store.fieldmap.collection, db.delete_stream_events(store, stream))
    refolded, emptied = share.refold(affected)
    for collection, n in emptied.items():
        note(collection, n)
    files = [str(r.get("path")) for r in runs if r.get("path")]
    total = dict(tombstone.get("removed") or {})
    for collection, n in removed.items():
        total[collection] = int(total.get(collection, 0)) + n
    tombstone.pop("refold", None)
    tombstone.update(
        state="erased", erased_at=datetime.now(timezone.utc), removed=total, archive_files=files
    )
    db.save_tombstone(store, tombstone)
    return {
        "stream": stream,
        "tombstone": digest,
        "removed": removed,
        "refolded": refolded,
        "keyed_snapshots_dropped": lost,
        "resumed": resumed,
        "archive_files": files,
    }


class ErasedGuard:
    """Refuses events of erased streams (exit 5), asking the server once per batch, and not at
    all where no stream was ever erased."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.active = db.any_tombstone(store)
        self.key = db.tombstone_key(store) if self.active else b""
        self.allowed: set[str] = set()

    def __call__(self, events: list[EventInput]) -> None:
        """Raise ConcurrencyConflict at the first event whose stream was erased."""
        if not self.active:
            return
        by_hash = {
            db.stream_hash(self.key, s): s for s in {e.stream for e in events} - self.allowed
        }
        if not by_hash:
            return
        erased = db.tombstones_among(self.store, list(by_hash))
        self.allowed.update(s for h, s in by_hash.items() if h not in erased)
        for event in events:
            if db.stream_hash(self.key, event.stream) in erased:
                where = f"line {event.line}: " if event.line is not None else ""
                raise ConcurrencyConflict(
                    f"{where}stream {event.stream!r} was erased (evstream erase); "
                    "publishing to it again needs --allow-erased"
                )
