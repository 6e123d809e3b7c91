"""Sample and synthetic event data for `evstream seed`. Standard library only."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

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


def synthetic_events(users: int, events_per_user: int, random_seed: int) -> Iterator[EventInput]:
    """A large log mixing the sessions fold's event types, generated lazily and reproducibly.

    Users' events are interleaved in rounds, as a live system would write them.
    """
    rng = random.Random(random_seed)
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
