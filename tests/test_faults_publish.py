"""A server killed under a bulk publish: a clear exit 3, and the same input again completes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pymongo
import pytest
from conftest import TEST_URI, Cli, write_numbered_events
from waiting import wait_for


@pytest.mark.skipif(bool(TEST_URI), reason="kills and restarts its own nx-27017 server")
def test_server_killed_during_bulk_publish(own_server: Any, tmp_path: Path, db_name: str) -> None:
    total = 20_000
    path = write_numbered_events(tmp_path / "events.ndjson", total, 50)
    cli = Cli(own_server.uri, db_name)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        own_server.uri, serverSelectionTimeoutMS=5000
    )
    events = client[db_name].events
    proc = cli.popen(
        "publish", "--file", str(path), "--batch-size", "200", EVSTREAM_TIMEOUT_MS="2000"
    )
    wait_for(lambda: events.count_documents({}) or proc.poll() is not None, 60, "a first batch")
    assert proc.poll() is None, "publishing ended before the kill"
    own_server.kill()
    code = proc.wait(60)
    err = proc.stderr.read()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        f.close()
    assert code == 3, err
    assert "Traceback" not in err
    assert "lost the connection to the server" in err or "cannot reach" in err

    own_server.start()
    before = events.count_documents({})
    assert 0 < before < total
    again = cli.run("publish", "--file", str(path), "-o", "json", timeout=120)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["published"] + summary["duplicates"] == total
    assert summary["duplicates"] == before
    assert events.count_documents({}) == total
    for s in range(50):
        docs = list(events.find({"stream": f"s{s}"}).sort("version", 1))
        assert [d["version"] for d in docs] == list(range(1, len(docs) + 1))
        assert [d["data"]["n"] for d in docs] == sorted(d["data"]["n"] for d in docs)
    client.close()
