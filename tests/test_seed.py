"""`evstream seed`: the sample data, synthetic logs, --drop."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

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
