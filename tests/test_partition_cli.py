"""watch --partition hands every change of a stream to the stream's part: a stream that is not
a string, and the delete of an event, included (issue 24, finding 3; docs/delivery.md)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from conftest import Cli
from test_watch_cli import Running

from evstream.events import partition_of

PARTS = 2


def other_than(part: int, prefix: str) -> str:
    """A name beginning with `prefix` whose string hash lands in a part other than `part`."""
    return next(f"{prefix}{i}" for i in range(100) if partition_of(f"{prefix}{i}", PARTS) != part)


def in_part(part: int, prefix: str) -> str:
    """A name beginning with `prefix` whose string hash lands in `part`."""
    return next(f"{prefix}{i}" for i in range(100) if partition_of(f"{prefix}{i}", PARTS) == part)


def test_a_stream_that_is_not_a_string_goes_to_one_part(cli: Cli, db: Any) -> None:
    now = datetime.now(timezone.utc)
    # Ids whose own hashes land in both parts: routed by `_id`, each stream would be split.
    ids = [in_part(1, "n"), in_part(2, "n"), in_part(1, "o"), in_part(2, "o")]
    streams: list[Any] = [42, 42, {"shop": 7}, {"shop": 7}]
    db.events.insert_many(
        [
            {"_id": ident, "stream": stream, "version": v, "type": "t", "ts": now}
            for v, (ident, stream) in enumerate(zip(ids, streams, strict=True), 1)
        ]
    )
    by_id: dict[str, int] = {}
    for part in range(1, PARTS + 1):
        r = cli.run("watch", "--from", "start", "--no-follow", "--checkpoint", "w",
                    "--partition", f"{part}/{PARTS}", "-o", "json")  # fmt: skip
        assert r.returncode == 0, r.stderr
        for line in r.stdout.splitlines():
            ident = json.loads(line)["key"]["_id"]
            assert ident not in by_id, f"{ident} was shown by two parts"
            by_id[ident] = part
    assert sorted(by_id) == sorted(ids), "every document is shown by one part"
    assert by_id[ids[0]] == by_id[ids[1]], "stream 42 was split over the parts"
    assert by_id[ids[2]] == by_id[ids[3]], "stream {shop: 7} was split over the parts"


def test_a_delete_goes_to_the_part_of_its_events_stream(cli: Cli, db: Any) -> None:
    stream = "alice"
    owner = partition_of(stream, PARTS)
    other = 3 - owner
    victim = other_than(owner, "evt-")  # by its `_id`, the delete would go to the other part
    marker = in_part(other, "marker-")  # a stream of the other part, to know it has caught up
    r = cli.run("publish", "login", "-s", stream, "--id", victim, "-o", "json")
    assert r.returncode == 0, r.stderr
    watchers = {
        part: Running(
            cli.popen(
                "watch",
                "-o",
                "json",
                "--from",
                "start",
                "--checkpoint",
                "w",
                "--partition",
                f"{part}/{PARTS}",
            )
        )  # fmt: skip
        for part in (1, 2)
    }
    try:
        for running in watchers.values():
            running.ready()
        watchers[owner].wait_for(
            lambda: any(victim in line for line in watchers[owner].out), "the event's insert"
        )
        db.events.delete_one({"_id": victim})
        r = cli.run("publish", "login", "-s", marker, "-o", "json")
        assert r.returncode == 0, r.stderr
        watchers[other].wait_for(
            lambda: any(marker in line for line in watchers[other].out), "the marker"
        )
        watchers[owner].wait_for(
            lambda: any('"delete"' in line for line in watchers[owner].out),
            "the delete, in the part of the event's stream",
        )
        assert not any('"delete"' in line for line in watchers[other].out), (
            "the delete went to the part of the event's _id, not of its stream"
        )
    finally:
        for running in watchers.values():
            running.stop()
