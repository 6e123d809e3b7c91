"""Concurrent writers: expected versions decide exactly one winner; appends never lose or repeat."""

from __future__ import annotations

import json
from typing import Any

from bson import json_util


def test_eight_racing_expected_version_publishes_one_wins(cli: Any, db: Any) -> None:
    assert cli("publish", "session.started", "-s", "acct").exit_code == 0
    procs = [
        cli.popen(
            "publish",
            "login",
            "-s",
            "acct",
            "--expected-version",
            "1",
            "-d",
            json.dumps({"racer": i}),
        )
        for i in range(8)
    ]
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
        p.stdin.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [5] * 7, results
    for code, err in results:
        if code == 5:
            assert (
                "stream 'acct' is at version 2, not the expected version 1; nothing was written"
                in err
            )
            assert "Traceback" not in err
    assert [d["version"] for d in db.events.find({"stream": "acct"}).sort("version", 1)] == [1, 2]


def test_four_bulk_appenders_to_one_stream_store_everything_without_gaps(cli: Any, db: Any) -> None:
    def lines(writer: int) -> str:
        return "".join(
            json.dumps({"type": "tick", "stream": "hot", "data": {"w": writer, "n": n}}) + "\n"
            for n in range(200)
        )

    procs = [cli.popen("publish", "--file", "-", "--batch-size", "50") for _ in range(4)]
    for i, p in enumerate(procs):
        p.stdin.write(lines(i))
        p.stdin.close()
    outcomes = [(p.wait(120), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    for code, out, err in outcomes:
        assert code == 0, err
        assert json.loads(out)["published"] == 200
    docs = list(db.events.find({"stream": "hot"}).sort("version", 1))
    assert [d["version"] for d in docs] == list(range(1, 801))
    for writer in range(4):  # each writer's events keep their order within the stream
        ns = [d["data"]["n"] for d in docs if d["data"]["w"] == writer]
        assert ns == list(range(200))


def test_seed_and_publish_at_the_same_time(cli: Any, db: Any) -> None:
    seeder = cli.popen("seed", "--users", "30", "--events-per-user", "10")
    publishers = [cli.popen("publish", "login", "-s", "user-00001", "-o", "json") for _ in range(3)]
    assert seeder.wait(120) == 0, seeder.stderr.read()
    printed = []
    for p in publishers:
        assert p.wait(60) == 0, p.stderr.read()
        printed.append(json_util.loads(p.stdout.read()))
    for p in [seeder, *publishers]:
        p.stdout.close()
        p.stderr.close()
        p.stdin.close()
    assert db.events.count_documents({}) == 303
    versions = [d["version"] for d in db.events.find({"stream": "user-00001"}).sort("version", 1)]
    assert versions == list(range(1, 14))
    assert {d["_id"] for d in printed} <= {
        d["_id"] for d in db.events.find({"stream": "user-00001"})
    }
