"""`evstream rebuild NAME --follow`: catch up, then apply events as they arrive; kill -9 and a
restart lose nothing; --incremental and --follow share one checkpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from typing import Any

import pymongo
from test_projection import CARTS, cart_event, carts, expected_carts, shop
from test_rebuild import Log
from waiting import wait_for


def follow(cli: Any, *args: str) -> Any:
    return cli.popen("rebuild", "carts", "--module", CARTS, "--follow", *args, "-o", "json")


def test_follow_catches_up_then_applies_events_as_they_arrive(cli, db):
    log = Log(db)
    shop(log, streams=3)
    proc = follow(cli, "--idle-timeout", "60")
    try:
        wait_for(lambda: len(carts(db)) == 3, 60, "the catch-up")
        assert carts(db) == expected_carts(db)
        log.add(cart_event(log, "cart-001", "cart.item_added", 40))
        wait_for(lambda: "sku-40" in carts(db)["cart-001"]["items"], 30, "the live event applied")
        log.add(log.event("cart-001", "page.viewed"), cart_event(log, "cart-new", "cart.created"))
        wait_for(lambda: "cart-new" in carts(db), 30, "a new cart")
        assert carts(db) == expected_carts(db)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    checkpoint = db.evstream_projections.find_one({"_id": "carts"})
    assert checkpoint is not None and checkpoint["fold_version"] == 1


def test_follow_stops_after_idle_timeout_with_a_summary_and_shares_the_checkpoint(cli, db):
    log = Log(db)
    shop(log, streams=2)
    result = cli("rebuild", "carts", "--module", CARTS, "--follow", "--idle-timeout", "0.5",
                 "-o", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mode"] == "follow" and report["caught_up"]["mode"] == "full"
    assert "following carts" in result.stderr
    assert carts(db) == expected_carts(db)
    log.add(cart_event(log, "cart-000", "cart.checked_out"))
    again = cli("rebuild", "carts", "--module", CARTS, "--incremental", "-o", "json")
    assert json.loads(again.stdout)["mode"] == "incremental", again.stderr
    assert carts(db) == expected_carts(db)
    dry = cli("rebuild", "carts", "--module", CARTS, "--follow", "--dry-run")
    assert dry.exit_code == 2


def test_kill_9_while_following_with_a_publisher_loses_nothing(cli, db):
    log = Log(db)
    shop(log, streams=5)
    stop = threading.Event()
    published = [0]

    def publish() -> None:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(cli.uri, tz_aware=True)
        mine = Log(client[cli.db])
        rng = random.Random(3)
        try:
            while not stop.is_set():
                name = f"cart-{rng.randint(0, 9):03d}"
                kind = rng.choice(["cart.created", "cart.item_added", "page.viewed", "search"])
                mine.add(cart_event(mine, name, kind, rng.randint(1, 9)))
                published[0] += 1
        finally:
            client.close()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        for _ in range(2):
            proc = follow(cli)
            try:
                start = published[0]
                wait_for(lambda s=start: published[0] > s + 50, 60, "events published meanwhile")
                wait_for(lambda: len(carts(db)) >= 5, 60, "the follower to write")
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                proc.kill()
                proc.communicate(timeout=30)
    finally:
        stop.set()
        publisher.join(30)
    proc = follow(cli, "--idle-timeout", "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert carts(db) == expected_carts(db)


def test_rebuild_sessions_follow_and_a_partitioned_follower(cli, db):
    from test_projection import expected_carts as want_carts
    from test_rebuild import assert_exact

    cli("seed", "--users", "6", "--events-per-user", "3", "-o", "json")
    result = cli("rebuild-sessions", "--follow", "--idle-timeout", "0.3", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert_exact(db)
    log = Log(db)
    shop(log, streams=12)
    part = cli("rebuild", "carts", "--module", CARTS, "--follow", "--partition", "2/3",
               "--idle-timeout", "0.3", "-o", "json")  # fmt: skip
    assert part.exit_code == 0, part.stderr
    assert carts(db) == want_carts(db, (2, 3))
