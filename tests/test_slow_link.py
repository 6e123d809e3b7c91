"""`watch --from start` over a slow link (tests/proxy.py), with a publisher writing through it.

The link holds back what a real deployment can: opening the change stream takes seconds
(mongos opening cursors on every shard) and so does the stream's first getMore after the log
read (a large oplog backlog). The events committed between the stream's opening and the read
are in both; the overlap that drops the stream's copies must last until the server says the
stream has passed the read, however long its answers take.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import parse_qsl, urlencode, urlparse

import pytest
from conftest import Cli
from proxy import FirstGetMoreAfterRead, SlowLink
from test_watch_cli import Running, assert_exactly_once_in_version_order, logins, publish


def upstream_port(uri: str) -> int | None:
    """The port of a single-host URI (a proxy stands in for exactly one server)."""
    netloc = urlparse(uri).netloc.rsplit("@", 1)[-1]
    if "," in netloc or uri.startswith("mongodb+srv://"):
        return None
    return int(netloc.rsplit(":", 1)[1]) if ":" in netloc else 27017


def through(uri: str, port: int) -> str:
    """The same URI (credentials, options, database) with its one host replaced by the proxy."""
    parts = urlparse(uri)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    options = [
        (k, v)
        for k, v in parse_qsl(parts.query)
        if k.lower() not in ("replicaset", "directconnection")
    ]
    query = urlencode([*options, ("directConnection", "true")])
    return parts._replace(netloc=f"{userinfo}127.0.0.1:{port}", query=query).geturl()


class Feeder(threading.Thread):
    """Writes NDJSON events to a publisher's stdin at about `rate` a second, then closes it."""

    def __init__(self, proc, total: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.proc, self.total, self.rate = proc, total, rate
        self.pace = threading.Event()

    def run(self) -> None:
        for i in range(self.total):
            stream = f"w{i % 7}"
            event = {"type": "t", "stream": stream, "data": {"n": i}}
            self.proc.stdin.write(json.dumps(event) + "\n")
            self.proc.stdin.flush()
            self.pace.wait(1 / self.rate)  # the publisher's pace: load, not synchronisation
        self.proc.stdin.close()


def test_from_start_over_a_slow_link_shows_every_event_once(cli, db, server_uri):
    port = upstream_port(server_uri)
    if port is None:
        pytest.skip("the slow link stands in for one server; EVSTREAM_TEST_URI names several")
    publish(cli, logins("alice", 1500) + logins("bob", 1500))
    rule = FirstGetMoreAfterRead(open_delay=5.0, getmore_delay=1.5)
    with SlowLink(port, rule) as link:
        slow = Cli(through(server_uri, link.port), cli.db)
        writer = slow.popen("publish", "--file", "-", "--batch-size", "3")
        feeder = Feeder(writer, total=800, rate=80)
        feeder.start()
        watching = Running(
            slow.popen("watch", "--from", "start", "-o", "json", "--idle-timeout", "3")
        )
        try:
            feeder.join(60)
            assert writer.wait(60) == 0, writer.stderr.read()
            assert watching.finish(60) == 0, watching.err
        finally:
            watching.stop()
    assert rule.delayed_getmores >= 1, link.commands[-20:]
    stored = list(db.events.find())
    assert len(stored) == 3800
    assert_exactly_once_in_version_order([d["doc"] for d in watching.docs()], stored)
    assert not any("shown before" in line for line in watching.err), watching.err
