"""`evstream top`, `check --consumers`, `status -o prometheus`: the log and its consumers, as
one JSON-ready snapshot (docs/operating.md).

A snapshot costs a few cheap queries (evstream/storage/monitor.py): the log's size and newest
event, the checkpoint documents (which carry each consumer's liveness, evstream/liveness.py),
the dead letters per checkpoint, and a capped count per consumer that is behind. Where even a
capped count would scan the log (the dev store above a small size), lag in events is
estimated from the log's time span and marked `lag_estimated`. A `Monitor` kept across
refreshes adds rates and their history (the sparklines) from what it saw before.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from evstream.delivery import split_part
from evstream.errors import InvalidInput
from evstream.liveness import classify, dead_after, silent_for, utcnow, worst_first
from evstream.storage import Store
from evstream.storage import monitor as queries
from evstream.storage.codec import aware

# Points kept per sparkline: three minutes at the default interval.
HISTORY = 180
# A behind consumer's lag is counted up to this many events; beyond, it is estimated.
LAG_CAP = 10_000
# The oldest event's ts (for estimates) is looked up again after this many seconds.
OLDEST_EVERY = 60.0


# --- one consumer's row, from its document (pure) -----------------------------------------------


@dataclass(frozen=True)
class Head:
    """The log as one refresh saw it."""

    events: int
    newest_ts: datetime | None
    newest_id: Any
    oldest_ts: datetime | None


def estimate_lag(head: Head, position: datetime) -> int:
    """Events after `position`, assuming the log's events spread evenly over its time span."""
    if head.newest_ts is None or head.oldest_ts is None or position >= head.newest_ts:
        return 0
    span = (head.newest_ts - head.oldest_ts).total_seconds()
    if span <= 0:
        return head.events
    part = (head.newest_ts - max(position, head.oldest_ts)).total_seconds() / span
    return max(1, min(head.events, round(head.events * part)))


def lag_figures(
    head: Head, position: datetime | None, counted: int | None, *, cap: int = LAG_CAP
) -> tuple[int | None, bool, float | None]:
    """(lag in events, whether that is an estimate, lag in seconds) from a position and what
    a capped count found (None: not counted)."""
    if head.newest_ts is None:
        return 0, False, 0.0
    if position is None:
        return None, False, None
    if counted == 0 or (counted is None and position >= head.newest_ts):
        return 0, False, 0.0
    seconds = max(0.0, (head.newest_ts - position).total_seconds())
    if counted is not None and counted < cap:
        return counted, False, seconds
    estimate = estimate_lag(head, position)
    if counted is not None:
        estimate = max(estimate, counted)
    return estimate, True, seconds


def watch_position(doc: Mapping[str, Any]) -> tuple[datetime | None, Any]:
    """A watch checkpoint's position in the log: (ts, _id) of the newest event shown."""
    pos = doc.get("position") or {}
    ts = pos.get("ts") if isinstance(pos, Mapping) else None
    if isinstance(ts, datetime):
        return aware(ts), pos.get("id")
    # Nothing shown yet: where it started (--from now or a time), else the other collections'
    # position; None: from the start of the log.
    for key in ("origin", "position_ts"):
        ts = doc.get(key)
        if isinstance(ts, datetime):
            return aware(ts), None
    return None, None


def projection_position(doc: Mapping[str, Any]) -> datetime | None:
    """A projection's position: its newest applied event's ts, from the follower's liveness
    when that is newer than the last saved run."""
    found = [doc.get("last_event_ts"), (doc.get("liveness") or {}).get("position_ts")]
    times = [aware(ts) for ts in found if isinstance(ts, datetime)]
    return max(times) if times else None


def base_row(doc: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The liveness part of a row: state is filled in once the lag is known."""
    live = doc.get("liveness") if isinstance(doc.get("liveness"), Mapping) else None
    row: dict[str, Any] = {
        "checkpoint": doc.get("_id"),
        "liveness": live is not None,
        "host": None,
        "pid": None,
        "version": None,
        "seen": None,
        "silent_seconds": None,
        "dead_after_seconds": None,
        "started": None,
        "handled": None,
        "rate": None,
        "retries": None,
        "dead_letters": 0,
        "error": None,
    }
    if live is not None:
        row.update(
            host=live.get("host"),
            pid=live.get("pid"),
            version=live.get("version"),
            seen=live.get("seen"),
            silent_seconds=_round(silent_for(live, now)),
            dead_after_seconds=dead_after(live),
            started=live.get("started"),
            handled=live.get("handled"),
            rate=live.get("rate"),
            retries=live.get("retries"),
            dead_letters=live.get("dead_letters") or 0,
            error=live.get("error"),
            reported_state=live.get("state"),
        )
    return row


def finish_row(
    row: dict[str, Any],
    doc: Mapping[str, Any],
    head: Head,
    position: datetime | None,
    counted: int | None,
    now: datetime,
    cap: int = LAG_CAP,
) -> dict[str, Any]:
    """Lag and state, once the lag was counted (or not)."""
    lag, estimated, seconds = lag_figures(head, position, counted, cap=cap)
    row.update(
        position_ts=position,
        lag_events=lag,
        lag_estimated=estimated,
        lag_seconds=_round(seconds),
    )
    live = doc.get("liveness") if isinstance(doc.get("liveness"), Mapping) else None
    waiting = None if head.newest_ts is None else (now - head.newest_ts).total_seconds()
    row["state"] = classify(live, now=now, lag_events=lag, lag_seconds=seconds, waiting=waiting)
    if row["state"] in ("dead", "stopped"):
        row["rate"] = 0.0  # its last word is not what it does now
    return row


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- a snapshot ----------------------------------------------------------------------------------


@dataclass
class Wanted:
    """A consumer whose lag needs counting: its row and what to count after."""

    row: dict[str, Any]
    doc: Mapping[str, Any]
    position: datetime | None
    ident: Any = None
    filters: Mapping[str, Any] | None = None
    types: list[str] | None = None


def plan_rows(
    watches: Iterable[Mapping[str, Any]],
    projections: Iterable[Mapping[str, Any]],
    now: datetime,
    log: str = "events",
) -> list[Wanted]:
    """One entry per watch checkpoint (each part its own) and per projection (part); `log`:
    the log's collection (a field map may name another)."""
    wanted = []
    for doc in watches:
        name, part = split_part(str(doc.get("_id")))
        row = base_row(doc, now)
        collection = doc.get("collection")
        row.update(kind="watch", name=name, part=part, collection=collection)
        # Dead letters: what the collection holds, whichever run set them aside.
        row["dead_letters"] = int(doc.get("dead_letter_count") or 0)
        ts, ident = watch_position(doc)
        if collection != log:
            wanted.append(Wanted(row, doc, None))  # no log position: no lag
            row["position_ts"] = ts
            continue
        filters = doc.get("filters") if isinstance(doc.get("filters"), Mapping) else {}
        wanted.append(Wanted(row, doc, ts, ident, filters=filters))
    for doc in projections:
        row = base_row(doc, now)
        live = row["liveness"]
        row.update(
            kind="follow" if live else "projection",
            name=doc.get("projection", doc.get("_id")),
            part=doc.get("partition"),
            collection=doc.get("collection"),
            last_run_at=doc.get("last_run_at"),
        )
        types = doc.get("types")
        wanted.append(
            Wanted(
                row,
                doc,
                projection_position(doc),
                types=list(types) if isinstance(types, list) else None,
            )
        )
    return wanted


def needs_count(head: Head, position: datetime | None, ident: Any) -> bool:
    """Whether a position may be behind the newest event (so its lag is worth a count)."""
    if position is None or head.newest_ts is None:
        return False
    if position < head.newest_ts:
        return True
    return ident is None or ident != head.newest_id


class Monitor:
    """Snapshots of the log and its consumers, with rates from one snapshot to the next."""

    def __init__(
        self,
        store: Store,
        *,
        cap: int = LAG_CAP,
        history: int = HISTORY,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.cap = cap
        self.history = history
        self.clock = clock
        self.now = now
        self.log_rates: deque[float] = deque(maxlen=history)
        self.rates: dict[tuple[str, str], deque[float]] = {}
        self.last: tuple[float, int] | None = None
        self.oldest: tuple[float, datetime | None] | None = None

    def _oldest(self, at: float, events: int) -> datetime | None:
        if events == 0:
            self.oldest = None
            return None
        if self.oldest is None or at - self.oldest[0] >= OLDEST_EVERY:
            self.oldest = (at, queries.oldest_ts(self.store))
        return self.oldest[1]

    def snapshot(self) -> dict[str, Any]:
        """The log and every consumer, worst first; rates need a snapshot before this one."""
        started = time.perf_counter()
        at = self.clock()
        now = self.now()
        log = queries.log_head(self.store)
        newest = log["newest"] or {}
        head = Head(log["events"], newest.get("ts"), newest.get("_id"), None)
        watches, projections = queries.consumer_documents(self.store)
        wanted = plan_rows(watches, projections, now, self.store.fieldmap.collection)
        oldest = None
        if any(needs_count(head, w.position, w.ident) for w in wanted):
            oldest = self._oldest(at, head.events)
        head = Head(head.events, head.newest_ts, head.newest_id, oldest)
        rows = []
        for w in wanted:
            counted = None
            if w.row["kind"] != "watch" or w.position is not None or w.filters is not None:
                if needs_count(head, w.position, w.ident):
                    assert w.position is not None
                    counted = queries.lag_after(
                        self.store,
                        filters=w.filters,
                        types=w.types,
                        ts=w.position,
                        ident=w.ident,
                        cap=self.cap,
                        size=head.events,
                    )
                else:
                    counted = 0
                rows.append(finish_row(w.row, w.doc, head, w.position, counted, now, self.cap))
            else:
                row = w.row
                row.update(lag_events=None, lag_estimated=False, lag_seconds=None)
                live = w.doc.get("liveness")
                row["state"] = classify(
                    live if isinstance(live, Mapping) else None,
                    now=now,
                    lag_events=None,
                    lag_seconds=None,
                )
                rows.append(row)
        rate = None
        if self.last is not None and at > self.last[0]:
            rate = max(0.0, (head.events - self.last[1]) / (at - self.last[0]))
            self.log_rates.append(rate)
        self.last = (at, head.events)
        seen = set()
        for row in rows:
            key = (str(row["kind"]), str(row["checkpoint"]))
            seen.add(key)
            points = self.rates.setdefault(key, deque(maxlen=self.history))
            points.append(float(row["rate"] or 0.0))
            row["rate_history"] = list(points)
        for key in set(self.rates) - seen:
            del self.rates[key]
        newest_age = None
        if head.newest_ts is not None:
            newest_age = round(max(0.0, (now - head.newest_ts).total_seconds()), 3)
        return {
            "now": now,
            "database": self.store.db.name,
            "log": {
                "events": head.events,
                "events_estimated": not self.store.embedded,
                "newest": log["newest"],
                "newest_age_seconds": newest_age,
                "rate": None if rate is None else round(rate, 3),
                "rate_history": list(self.log_rates),
            },
            "consumers": worst_first(rows),
            "refresh_seconds": round(time.perf_counter() - started, 4),
        }


def consumer_rows(store: Store) -> list[dict[str, Any]]:
    """One look at every consumer and projection, worst first (for `status`)."""
    return list(Monitor(store).snapshot()["consumers"])


# --- check --consumers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """What `check --consumers` allows (docs/operating.md has the defaults)."""

    max_lag_events: int | None = None
    max_lag_seconds: float | None = 300.0
    max_dead_letters: int = 0
    stale_seconds: float | None = None  # None: each consumer's own dead bound
    name: str | None = None


def thresholds(
    max_lag: str | None = None,
    max_dead_letters: int | None = None,
    stale: str | None = None,
    name: str | None = None,
) -> Thresholds:
    """check --consumers' options as thresholds; the defaults where one is not given (a lag
    given in events has no time limit beside it, and the other way round)."""
    limits = Thresholds(name=name)
    if max_lag is not None:
        events, seconds = parse_lag(max_lag)
        limits = replace(limits, max_lag_events=events, max_lag_seconds=seconds)
    if max_dead_letters is not None:
        if max_dead_letters < 0:
            raise InvalidInput("--max-dead-letters must be 0 or more")
        limits = replace(limits, max_dead_letters=max_dead_letters)
    if stale is not None:
        seconds = parse_duration(stale)
        if seconds is None:
            raise InvalidInput(f"--stale {stale!r} is not a duration such as 30s, 5m or 1h")
        limits = replace(limits, stale_seconds=seconds)
    return limits


def check_consumers(snapshot: Mapping[str, Any], limits: Thresholds) -> dict[str, Any]:
    """`check --consumers`' report: the thresholds, what was checked, one finding per consumer
    over a threshold; healthy when there is none."""
    rows = [
        row
        for row in snapshot.get("consumers") or []
        if row.get("kind") != "projection"
        and (limits.name is None or row.get("name") == limits.name)
    ]
    findings = consumer_findings(rows, limits)
    if limits.name is not None and not rows:
        findings.append(
            {
                "kind": "missing",
                "consumer": None,
                "name": limits.name,
                "part": None,
                "state": None,
                "problem": f"no consumer named {limits.name!r} has a checkpoint here",
                "fix": "check the name and --db, or start it (evstream watch --checkpoint NAME, "
                "evstream rebuild NAME --follow)",
            }
        )
    return {
        "database": snapshot.get("database"),
        "now": snapshot.get("now"),
        "thresholds": {
            "max_lag_events": limits.max_lag_events,
            "max_lag_seconds": limits.max_lag_seconds,
            "max_dead_letters": limits.max_dead_letters,
            "stale_seconds": limits.stale_seconds,
            "name": limits.name,
        },
        "consumers": [
            {k: row.get(k) for k in ("checkpoint", "kind", "name", "part", "state")} for row in rows
        ],
        "findings": findings,
        "healthy": not findings,
    }


def label(row: Mapping[str, Any]) -> str:
    """How a finding names a consumer: kind, name and part."""
    part = f" part {row['part']}" if row.get("part") else ""
    return f"{row.get('kind')} {row.get('name')!r}{part}"


def consumer_findings(
    rows: Iterable[Mapping[str, Any]], limits: Thresholds
) -> list[dict[str, Any]]:
    """One finding per consumer that crosses a threshold (the first it crosses, worst first:
    no sign of life, then dead letters, then lag). Projections that no follower keeps
    (rebuilt by hand or by cron) are not consumers: they are left out."""
    findings = []
    for row in rows:
        if row.get("kind") == "projection":
            continue
        if limits.name is not None and row.get("name") != limits.name:
            continue
        found = _finding(row, limits)
        if found is not None:
            problem, fix, kind = found
            findings.append(
                {
                    "kind": kind,
                    "consumer": row.get("checkpoint"),
                    "name": row.get("name"),
                    "part": row.get("part"),
                    "state": row.get("state"),
                    "problem": f"{label(row)}: {problem}",
                    "fix": fix,
                }
            )
    return findings


def _finding(row: Mapping[str, Any], limits: Thresholds) -> tuple[str, str, str] | None:
    where = f" on {row['host']} (pid {row['pid']})" if row.get("host") else ""
    if row.get("reported_state") == "failed":
        return (
            f"exited on an error{where}: {row.get('error') or 'no message'}",
            "read its log, fix the cause and start it again",
            "failed",
        )
    if row.get("state") != "stopped":
        silent = row.get("silent_seconds")
        bound = limits.stale_seconds
        if bound is None:
            bound = row.get("dead_after_seconds")
        if not row.get("liveness"):
            return (
                "has never recorded a sign of life (not running, or run by an evstream "
                "without liveness)",
                "start it, or delete its checkpoint if nothing runs it any more",
                "stale",
            )
        if silent is not None and bound is not None and silent > bound:
            return (
                f"no sign of life for {_duration(silent)}{where}, and it did not stop cleanly",
                "look whether the process still runs; restart it (it continues from its "
                "checkpoint)",
                "stale",
            )
    letters = int(row.get("dead_letters") or 0)
    if letters > limits.max_dead_letters:
        return (
            f"{letters:,} dead letter{'s' * (letters != 1)} (at most "
            f"{limits.max_dead_letters:,} allowed)",
            "fix the handler, replay the changes in evstream_dead_letters (docs/delivery.md), "
            "then delete them",
            "dead_letters",
        )
    lag, seconds = row.get("lag_events"), row.get("lag_seconds")
    about = "about " if row.get("lag_estimated") else ""
    if limits.max_lag_events is not None and lag is not None and lag > limits.max_lag_events:
        return (
            f"{about}{lag:,} events behind (at most {limits.max_lag_events:,} allowed)",
            "give it more workers (--partition I/N) or a faster handler, or see why it stalls",
            "lag",
        )
    if (
        limits.max_lag_seconds is not None
        and seconds is not None
        and lag
        and seconds > limits.max_lag_seconds
    ):
        return (
            f"{_duration(seconds)} behind the newest event (at most "
            f"{_duration(limits.max_lag_seconds)} allowed)",
            "give it more workers (--partition I/N) or a faster handler, or see why it stalls",
            "lag",
        )
    return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def parse_lag(text: str) -> tuple[int | None, float | None]:
    """--max-lag: a number of events (`10000`) or a duration (`30s`, `5m`, `1h`)."""
    value = text.strip().lower().replace("_", "").replace(",", "")
    if value.isdigit():
        return int(value), None
    seconds = parse_duration(value)
    if seconds is None:
        raise InvalidInput(
            f"--max-lag {text!r} is neither a number of events (1000) nor a duration (30s, 5m)"
        )
    return None, seconds


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|min|m|h|d)$")


def parse_duration(text: str) -> float | None:
    """A duration such as `30s`, `5m`, `1.5h`, `500ms`; None when it is not one."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        return None
    return float(match["n"]) * _UNITS[match["unit"]]
