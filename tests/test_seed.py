"""`evstream seed`: the sample data, synthetic logs, --drop."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from evstream.events import is_secret_key
from evstream.seeding import synthetic_events


def test_sample_is_alice_and_bob_and_reseeding_adds_nothing(cli: Any, db: Any) -> None:
    first = cli("seed", "-o", "json")
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout) == {"published": 4, "duplicates": 0}
    docs = list(db.events.find().sort([("stream", 1), ("version", 1)]))
    assert [(d["stream"], d["version"], d["type"]) for d in docs] == [
        ("alice", 1, "session.started"),
        ("alice", 2, "login"),
        ("bob", 1, "session.started"),
        ("bob", 2, "login"),
    ]
    assert docs[0]["data"] == {"name": "Alice", "email": "alice@example.com"}
    assert docs[2]["data"] == {"name": "Bob", "email": "bob@example.com"}
    again = cli("seed", "-o", "json")
    assert json.loads(again.stdout) == {"published": 0, "duplicates": 4}
    assert db.events.count_documents({}) == 4


def test_pretty_seed_shows_the_events(cli: Any, db: Any) -> None:
    r = cli("seed", "-o", "pretty")
    assert r.exit_code == 0
    for text in ("alice@1", "alice@2", "bob@1", "bob@2", "alice@example.com", "Seeded"):
        assert text in r.stdout


def test_synthetic_log_is_reproducible_and_mixes_types(cli: Any, db: Any) -> None:
    r = cli("seed", "--users", "40", "--events-per-user", "12", "--random-seed", "3", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["published"] == 480
    types = Counter(d["type"] for d in db.events.find({}, {"type": 1}))
    assert types["session.started"] == 40
    assert {"login", "logout", "profile.updated"} <= set(types)
    for stream in ("user-00001", "user-00040"):
        assert [
            d["version"] for d in db.events.find({"stream": stream}).sort("version", 1)
        ] == list(range(1, 13))
    again = cli(
        "seed", "--users", "40", "--events-per-user", "12", "--random-seed", "3", "-o", "json"
    )
    assert json.loads(again.stdout) == {"published": 0, "duplicates": 480}


def test_same_seed_same_data_other_seed_other_data() -> None:
    def snapshot(seed: int) -> list[tuple[str, str, str]]:
        return [(e.stream, e.type, json.dumps(e.data)) for e in synthetic_events(5, 6, seed)]

    assert snapshot(1) == snapshot(1)
    assert snapshot(1) != snapshot(2)


def test_nothing_seeded_holds_a_secret() -> None:
    def keys(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [k for k, v in value.items() for k in [k, *keys(v)]]
        return []

    events = list(synthetic_events(50, 20, 9))
    assert not [k for e in events for k in keys(e.data) + keys(e.meta) if is_secret_key(k)]


def test_drop_needs_confirmation_when_not_on_a_terminal(cli: Any, db: Any) -> None:
    assert cli("seed").exit_code == 0
    r = cli("seed", "--drop")
    assert r.exit_code == 2 and "add --yes to confirm" in r.stderr
    assert db.events.count_documents({}) == 4


def test_drop_yes_starts_over(cli: Any, db: Any) -> None:
    assert cli("seed", "--users", "3", "--events-per-user", "2").exit_code == 0
    db.evstream_checkpoints.insert_one({"_id": "w1"})
    db.unrelated.insert_one({"_id": 1})
    r = cli("seed", "--drop", "--yes", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert "dropped events, evstream_checkpoints" in r.stderr
    assert db.events.count_documents({}) == 4
    assert db.evstream_checkpoints.count_documents({}) == 0
    assert db.unrelated.count_documents({}) == 1  # what is not evstream's stays


# --- a day's shape, plurals, a no at the prompt --------------------------------------------------


def test_synthetic_events_spread_over_the_past_day_busier_by_day(cli: Any, db: Any) -> None:
    before = datetime.now(timezone.utc)
    r = cli("seed", "--users", "60", "--events-per-user", "20", "-o", "json")
    assert r.exit_code == 0, r.stderr
    docs = list(db.events.find({}, {"ts": 1, "stream": 1, "version": 1}))
    times = [d["ts"] for d in docs]
    assert before - timedelta(days=1, seconds=5) <= min(times)
    assert min(times) < before - timedelta(hours=20)  # not all now: over the whole day
    assert max(times) <= datetime.now(timezone.utc)
    hours = Counter(t.astimezone().hour for t in times)
    assert len(hours) == 24
    assert max(hours.values()) >= 4 * min(hours.values())  # a day's shape, not flat
    by_stream: dict[str, list[Any]] = {}
    for d in sorted(docs, key=lambda d: (d["stream"], d["version"])):
        by_stream.setdefault(d["stream"], []).append(d["ts"])
    assert all(ts == sorted(ts) for ts in by_stream.values())  # time follows version order


@pytest.mark.parametrize(("span", "seconds"), [("2h", 7200), ("90m", 5400), ("1w", 604800)])
def test_span_sets_the_window(cli: Any, db: Any, span: str, seconds: int) -> None:
    now = datetime.now(timezone.utc)
    r = cli("seed", "--users", "20", "--events-per-user", "5", "--span", span, "-o", "json")
    assert r.exit_code == 0, r.stderr
    oldest = db.events.find_one(sort=[("ts", 1)])["ts"]
    assert now - timedelta(seconds=seconds + 5) <= oldest <= now - timedelta(seconds=seconds * 0.8)


def test_span_zero_stamps_now_and_a_bad_span_is_refused(cli: Any, db: Any) -> None:
    now = datetime.now(timezone.utc)
    r = cli("seed", "--users", "3", "--events-per-user", "2", "--span", "0", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert db.events.find_one(sort=[("ts", 1)])["ts"] >= now - timedelta(seconds=5)
    bad = cli("seed", "--users", "3", "--span", "yesterday")
    assert bad.exit_code == 2 and "'yesterday' is not a span such as 1d" in bad.stderr


def test_summaries_use_singular_and_plural(cli: Any, db: Any) -> None:
    one = cli("seed", "--users", "1", "--events-per-user", "1", "-o", "pretty")
    assert "Seeded: 1 event published · 0 already stored" in one.stdout
    many = cli("seed", "-o", "pretty")
    assert "Seeded: 4 events published" in many.stdout


def test_answering_no_at_the_drop_prompt_says_nothing_was_dropped(cli: Any, db: Any) -> None:
    assert cli("seed").exit_code == 0
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "evstream", "seed", "--drop", "-o", "pretty"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **cli.env()},
        text=True,
    )
    os.close(slave)
    try:
        os.write(master, b"n\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    assert "Delete the events, sessions and checkpoints" in err
    assert out.strip() == "Nothing was dropped and nothing seeded."
    assert db.events.count_documents({}) == 4
