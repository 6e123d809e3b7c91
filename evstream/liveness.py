"""What a running consumer says of itself, and how a reader judges it (docs/operating.md).

A consumer (`watch --checkpoint`, each part of a partitioned watch, `rebuild --follow`) keeps a
`Pulse`: figures it already knows (changes handled, retries, dead letters), sampled only when
it writes its checkpoint document anyway, or every `every` seconds while idle. The pulse is
stored in that document under `liveness`; nothing is queried for it. Standard library only.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from evstream import __version__

UTC = timezone.utc
# Seconds between liveness writes of an idle consumer (EVSTREAM_HEARTBEAT changes it; tests
# use a fraction of a second). A busy consumer's checkpoint writes carry it more often.
HEARTBEAT = 5.0
# A consumer not heard of for this many of its own heartbeats, and not cleanly stopped, is
# dead: 30 s at the default.
DEAD_AFTER_BEATS = 6
# The rate a consumer reports is events per second over about this many seconds.
RATE_WINDOW = 10.0


def heartbeat_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """The heartbeat: EVSTREAM_HEARTBEAT when it is a positive number, else HEARTBEAT."""
    text = environ.get("EVSTREAM_HEARTBEAT", "")
    try:
        value = float(text)
    except ValueError:
        return HEARTBEAT
    return value if 0 < value < 3600 else HEARTBEAT


def utcnow() -> datetime:
    """Now, in UTC, at millisecond precision (what a BSON date keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Pulse:
    """A running consumer's liveness: where it runs and what it has done, ready to store.

    `record` is called on writes the consumer makes anyway; `due` says when an idle consumer
    should write just to be seen. Costs a clock read per call, nothing per event.
    """

    def __init__(
        self,
        kind: str,
        *,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.kind = kind
        self.every = every if every is not None else heartbeat_seconds()
        self.clock = clock
        self.now = now
        self.started = now()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.handled = 0
        self.retries = 0
        self.dead_letters = 0
        self.position: datetime | None = None  # the newest applied event's ts, if known
        self.last = float("-inf")
        self.samples: deque[tuple[float, int]] = deque()

    def due(self) -> bool:
        """Whether a heartbeat's time has come (an idle consumer writes then)."""
        return self.clock() - self.last >= self.every

    def rate(self, at: float) -> float:
        """Events handled per second over about the last RATE_WINDOW seconds."""
        samples = self.samples
        samples.append((at, self.handled))
        while len(samples) > 2 and at - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        first_at, first = samples[0]
        span = at - first_at
        return (self.handled - first) / span if span > 0 else 0.0

    def record(self, state: str = "running", error: str | None = None) -> dict[str, Any]:
        """The `liveness` subdocument as of now; a heartbeat is counted from here."""
        at = self.clock()
        self.last = at
        doc: dict[str, Any] = {
            "state": state,
            "seen": self.now(),
            "started": self.started,
            "kind": self.kind,
            "host": self.host,
            "pid": self.pid,
            "version": __version__,
            "handled": self.handled,
            "rate": round(self.rate(at), 3),
            "retries": self.retries,
            "dead_letters": self.dead_letters,
            "every": self.every,
        }
        if self.position is not None:
            doc["position_ts"] = self.position
        if error:
            doc["error"] = error[:300]
        return doc


# --- judging what was recorded -------------------------------------------------------------------

STATES = ("dead", "stalled", "behind", "live", "idle", "stopped", "unknown")
# Worst first: how rows sort in `top`.
SEVERITY = {"dead": 0, "stalled": 1, "behind": 2, "unknown": 3, "live": 4, "idle": 5, "stopped": 6}
# Behind the log's newest event by at least this long: behind (or stalled, when not moving).
BEHIND_SECONDS = 5.0
# Behind, and handling nothing for this long (its rate window): stalled.
STALLED_SECONDS = 2 * RATE_WINDOW


def dead_after(liveness: Mapping[str, Any]) -> float:
    """Seconds without a sign of life after which a consumer counts as dead."""
    every = liveness.get("every")
    beat = float(every) if isinstance(every, (int, float)) and every > 0 else HEARTBEAT
    return DEAD_AFTER_BEATS * beat


def silent_for(liveness: Mapping[str, Any] | None, now: datetime) -> float | None:
    """Seconds since the consumer was last seen (None: it never said)."""
    if not liveness:
        return None
    seen = liveness.get("seen")
    if not isinstance(seen, datetime):
        return None
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)
    return max(0.0, (now - seen).total_seconds())


def classify(
    liveness: Mapping[str, Any] | None,
    *,
    now: datetime,
    lag_events: int | None,
    lag_seconds: float | None,
    waiting: float | None = None,
) -> str:
    """A consumer's state from its liveness and its lag.

    dead: not seen for `dead_after` and not cleanly stopped (or it exited on an error);
    stopped: it said so on the way out; stalled: alive, with events to handle, handling
    nothing (rate 0 over its window), and STALLED_SECONDS behind the newest event or the
    newest event that long old (`waiting`: seconds since the newest event's ts); behind:
    alive, with events to handle, and BEHIND_SECONDS behind or waiting; live: alive and
    handling events; idle: alive, caught up, nothing to do; unknown: it never recorded any
    liveness (a projection rebuilt by hand or by cron, or a checkpoint of an older evstream).
    """
    if not liveness:
        return "unknown"
    state = liveness.get("state")
    if state == "stopped":
        return "stopped"
    silent = silent_for(liveness, now)
    if state == "failed" or silent is None or silent > dead_after(liveness):
        return "dead"
    late = max(lag_seconds or 0.0, waiting or 0.0) if lag_events else 0.0
    behind = late >= BEHIND_SECONDS
    rate = liveness.get("rate")
    moving = isinstance(rate, (int, float)) and rate > 0
    if behind and not moving and late >= STALLED_SECONDS:
        return "stalled"
    if behind:
        return "behind"
    return "live" if moving else "idle"


def worst_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted by state, worst first, then by lag (largest first), then by name."""
    return sorted(
        rows,
        key=lambda r: (
            SEVERITY.get(r.get("state", "unknown"), 3),
            -(r.get("lag_seconds") or 0.0),
            -(r.get("lag_events") or 0),
            str(r.get("name")),
            str(r.get("part") or ""),
        ),
    )
