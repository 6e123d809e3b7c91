"""A user's projection under kill -9 mid-rebuild, with a reader watching its collection."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pymongo
import pytest
from test_projection import CARTS, cart_event, expected_cart, expected_carts
from test_rebuild import Log
from waiting import wait_for

from evstream.events import event_problem

CART_FIELDS = {"_id", "owner", "items", "total", "status", "version", "updated_at", "events"}


class Reader(threading.Thread):
    """Reads the whole collection over and over: its smallest size, and any partial document."""

    def __init__(self, uri: str, db_name: str) -> None:
        super().__init__(daemon=True)
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, tz_aware=True)
        self.coll = self.client[db_name].carts
        self.stop = threading.Event()
        self.reads = 0
        self.smallest: int | None = None
        self.partial: list[dict[str, Any]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            docs = list(self.coll.find())
            self.reads += 1
            self.smallest = len(docs) if self.smallest is None else min(self.smallest, len(docs))
            self.partial += [d for d in docs if set(d) != CART_FIELDS][:5]

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        self.client.close()


def assert_prefix_folds(db: Any) -> None:
    """Each stored cart is the fold of its stream's declared events up to its version."""
    events: dict[str, list[dict[str, Any]]] = {}
    for e in db.events.find({"type": {"$regex": "^cart\\."}}).sort([("stream", 1), ("version", 1)]):
        if event_problem(e) is None:
            events.setdefault(e["stream"], []).append(e)
    for doc in db.carts.find():
        prefix = [e for e in events[doc["_id"]] if e["version"] <= doc["version"]]
        assert doc == expected_cart(doc["_id"], prefix), doc["_id"]


def count(db: Any, query: dict[str, Any]) -> int:
    return int(db.command("count", "carts", query=query)["n"])


@pytest.mark.parametrize("rerun", [[], ["--incremental"]], ids=["full", "incremental"])
def test_kill_9_midway_leaves_usable_carts_that_a_rerun_makes_exact(cli, db, rerun):
    streams = 1200
    log = Log(db)
    batch = []
    for n in range(streams):
        name = f"cart-{n:05d}"
        batch += [
            cart_event(log, name, "cart.created"),
            log.event(name, "page.viewed", {"path": "/"}),
            cart_event(log, name, "cart.item_added", n),
        ]
    log.add(*batch)
    first = cli.run("rebuild", "carts", "--module", CARTS, "-o", "json")
    assert first.returncode == 0, first.stderr
    log.add(*(cart_event(log, f"cart-{n:05d}", "cart.checked_out") for n in range(streams)))
    reader = Reader(cli.uri, cli.db)
    reader.start()
    try:
        proc = cli.popen("rebuild", "carts", "--module", CARTS, "--batch-size", "5")
        try:
            wait_for(
                lambda: proc.poll() is not None or count(db, {"status": "checked_out"}) >= 40,
                60,
                "the rebuild to write some carts",
            )
            assert proc.poll() is None, f"the rebuild ended before the kill: {proc.stderr.read()}"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        renewed = count(db, {"status": "checked_out"})
        assert 0 < renewed < streams, renewed
        assert db.carts.count_documents({}) == streams
        assert_prefix_folds(db)
        again = cli.run("rebuild", "carts", "--module", CARTS, *rerun, "-o", "json")
        assert again.returncode == 0, again.stderr
        assert {d["_id"]: d for d in db.carts.find()} == expected_carts(db)
    finally:
        reader.finish()
    assert reader.reads > 1 and reader.smallest == streams
    assert reader.partial == []
