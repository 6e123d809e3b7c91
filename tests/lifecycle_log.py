"""A log for the tests of archive, erase and redact: streams whose versions are spread in time."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
TYPES = ("session.started", "login", "cart.created", "cart.item_added", "cart.item_added", "logout")


def event_ts(stream: int, version: int, streams: int) -> datetime:
    """Version v of every stream lies in the same stretch of time: cutting at `cut(v)` archives
    versions below v of every stream."""
    return BASE + timedelta(seconds=version * streams + stream, milliseconds=stream % 7 * 100)


def cut(version: int, streams: int) -> datetime:
    """The --before that archives versions below `version`."""
    return BASE + timedelta(seconds=version * streams)


def make_events(streams: int, versions: int) -> list[dict[str, Any]]:
    """Stored-event copies (with _id, version, ts), in stream and version order."""
    out = []
    for i in range(streams):
        name = f"user-{i:05d}"
        for v in range(1, versions + 1):
            kind = TYPES[(v - 1) % len(TYPES)]
            data: dict[str, Any] = {
                "session.started": {"name": f"N{i}", "email": f"{name}@example.com"},
                "login": {"username": name},
                "cart.created": {"owner": name},
                "cart.item_added": {"sku": f"sku-{v}", "price": v},
                "logout": {},
            }[kind]
            out.append(
                {
                    "_id": f"{name}-v{v:04d}",
                    "stream": name,
                    "version": v,
                    "type": kind,
                    "data": data,
                    "ts": {"$date": event_ts(i, v, streams).isoformat().replace("+00:00", "Z")},
                }
            )
    return out


def write_log(path: Path, events: list[dict[str, Any]]) -> Path:
    """An NDJSON file that `publish --file` stores exactly."""
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path
