"""Process-level tuning for the passes that allocate per event (publish, watch): standard library
only."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

# Young objects allowed before the cyclic collector runs (CPython's default is 700).
BULK_THRESHOLD = 50_000


@contextlib.contextmanager
def fewer_collections(threshold: int = BULK_THRESHOLD) -> Iterator[None]:
    """Run the cyclic garbage collector less often while a bulk pass allocates.

    Events are trees of dicts and lists that reference counting frees as soon as they are
    done; what a pass keeps (a checked file's events, a batch) the default thresholds scan
    again and again, about 1.4 µs per event at 100,000 lines. The collector still runs, so
    cycles are still freed and memory stays flat; the thresholds are put back afterwards, when
    the last of the passes running at once (threads of one process: the Python API) ends.
    """
    with _LOCK:
        if not _ACTIVE:
            _SAVED.append(gc.get_threshold())
        _ACTIVE.append(threshold)
        before = _SAVED[-1]
        gc.set_threshold(max(max(_ACTIVE), before[0]), *before[1:])
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE.remove(threshold)
            if not _ACTIVE:
                gc.set_threshold(*_SAVED.pop())


_LOCK = threading.Lock()
_ACTIVE: list[int] = []  # the thresholds of the passes running now
_SAVED: list[tuple[int, int, int]] = []  # the thresholds before the first of them
