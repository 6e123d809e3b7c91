"""Sample and synthetic event data for `evstream seed`. Standard library only."""

from __future__ import annotations

import bisect
import math
import random
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from evstream.events import EventInput

# Ids of seeded events are derived from this namespace, so seeding twice stores nothing new.
SEED_NAMESPACE = uuid.UUID("6f1f4d1e-3c0b-4e57-9a52-0d6a5b0f9e11")

SAMPLE_USERS = (
    ("alice", "Alice", "alice@example.com"),
    ("bob", "Bob", "bob@example.com"),
)

FIRST_NAMES = (
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Radia",
    "Linus",
    "Frances",
    "John",
    "Katherine",
    "Dennis",
    "Hedy",
    "Tim",
    "Shafi",
    "Leslie",
    "Joan",
    "Guido",
)
PAGES = ("/", "/pricing", "/docs", "/account", "/billing", "/search", "/settings")


def seed_id(*parts: object) -> str:
    """A deterministic event id for seeded data."""
    return str(uuid.uuid5(SEED_NAMESPACE, "/".join(str(p) for p in parts)))


def sample_events() -> list[EventInput]:
    """Alice's and Bob's `session.started` and `login` events."""
    events = []
    for stream, name, email in SAMPLE_USERS:
        meta = {"source": "evstream seed"}
        events.append(
            EventInput(
                type="session.started",
                stream=stream,
                data={"name": name, "email": email},
                meta=meta,
                id=seed_id("sample", stream, 1),
            )
        )
        events.append(
            EventInput(
                type="login",
                stream=stream,
                data={"username": stream, "method": "sso"},
                meta=meta,
                id=seed_id("sample", stream, 2),
            )
        )
    return events


DEFAULT_SPAN = timedelta(days=1)
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*$", re.IGNORECASE)
_SPAN_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Relative activity by local hour of the day: quiet at night, busy mornings and afternoons.
HOURLY_SHAPE = (
    1, 1, 1, 1, 1, 2, 4, 7, 10, 12, 12, 11, 9, 10, 12, 12, 11, 9, 7, 6, 5, 4, 3, 2,
)  # fmt: skip


def parse_span(text: str) -> timedelta:
    """'1d', '12h', '90m', '30s', '2w' or plain seconds → a timedelta; ValueError otherwise."""
    match = _SPAN.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a span such as 1d, 12h, 90m or 30s")
    seconds = float(match.group(1)) * _SPAN_UNITS[(match.group(2) or "s").lower()]
    if seconds > 10 * 365 * 86400:
        raise ValueError(f"{text!r} is more than ten years")
    return timedelta(seconds=seconds)


def spread_times(
    total: int, span: timedelta, end: datetime, random_seed: int
) -> Iterator[datetime]:
    """`total` times rising through the `span` before `end`, denser by day than by night.

    Reproducible for a seed and an end; in order, so events of one stream keep version order.
    """
    seconds = span.total_seconds()
    buckets = max(1, min(int(seconds // 60), 20_000))  # minutes, coarser for long spans
    size = seconds / buckets
    start = (end - span).replace(microsecond=(end - span).microsecond // 1000 * 1000)
    weights = []
    for i in range(buckets):
        hour = (start + timedelta(seconds=i * size)).astimezone().hour
        weights.append(HOURLY_SHAPE[hour])
    cumulative = []
    running = 0.0
    for weight in weights:
        running += weight
        cumulative.append(running)
    rng = random.Random(f"{random_seed}/ts")
    for i in range(total):
        target = (i + rng.random()) / total * running
        bucket = min(bisect.bisect_right(cumulative, target), buckets - 1)
        before = cumulative[bucket - 1] if bucket else 0.0
        within = (target - before) / (cumulative[bucket] - before)
        offset = (bucket + min(max(within, 0.0), 1.0)) * size
        yield start + timedelta(seconds=math.floor(offset * 1000) / 1000)


def synthetic_events(
    users: int,
    events_per_user: int,
    random_seed: int,
    *,
    span: timedelta = DEFAULT_SPAN,
    end: datetime | None = None,
) -> Iterator[EventInput]:
    """A large log mixing the sessions fold's event types, generated lazily and reproducibly.

    Users' events are interleaved in rounds, as a live system would write them, with times
    spread over the `span` before `end` (now) in a day's shape; a zero span stamps them now.
    """
    rng = random.Random(random_seed)
    times: Iterator[datetime | None] = (
        spread_times(users * events_per_user, span, end or datetime.now(timezone.utc), random_seed)
        if span.total_seconds() > 0
        else iter(lambda: None, 0)
    )
    width = max(len(str(users)), 5)
    streams = [f"user-{i:0{width}d}" for i in range(1, users + 1)]
    names = {s: (rng.choice(FIRST_NAMES), s.replace("-", "")) for s in streams}
    meta = {"source": "evstream seed", "random_seed": random_seed}
    for n in range(1, events_per_user + 1):
        for stream in streams:
            first, handle = names[stream]
            yield EventInput(
                type=(etype := _pick_type(rng, n, events_per_user)),
                stream=stream,
                data=_payload(rng, etype, first, handle),
                meta=meta,
                id=seed_id("synthetic", random_seed, stream, n),
                ts=next(times),
            )


def _pick_type(rng: random.Random, n: int, last: int) -> str:
    if n == 1:
        return "session.started"
    if n == last and last > 2 and rng.random() < 0.3:
        return "session.ended"
    return rng.choices(
        ("login", "logout", "profile.updated", "page.viewed"), weights=(40, 25, 10, 25)
    )[0]


def _payload(rng: random.Random, etype: str, first: str, handle: str) -> dict[str, object]:
    if etype == "session.started":
        return {"name": first, "email": f"{handle}@example.com"}
    if etype == "login":
        return {"username": handle, "method": rng.choice(("magic-link", "sso", "passkey"))}
    if etype == "logout":
        return {"reason": rng.choice(("user", "timeout"))}
    if etype == "profile.updated":
        if rng.random() < 0.5:
            return {"name": f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}."}
        return {"email": f"{handle}+{rng.randint(1, 99)}@example.com"}
    if etype == "page.viewed":
        return {"path": rng.choice(PAGES), "ms": rng.randint(5, 900)}
    return {}
