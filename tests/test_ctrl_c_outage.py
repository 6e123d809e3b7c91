"""Ctrl-C is instant while a watch waits out an outage: before, closing the client on the way
out waited for a server for the whole server-selection timeout (30 s)."""

from __future__ import annotations

import signal
import time
from typing import Any

import pymongo
import pytest
from conftest import Cli
from test_watch_cli import Running
from waiting import wait_for

QUICK = 5.0  # seconds; the bug took 30 (the server-selection timeout)


def interrupt(watching: Running) -> float:
    started = time.monotonic()
    watching.proc.send_signal(signal.SIGINT)
    assert watching.finish() == 130, watching.err
    assert not any("Traceback" in line for line in watching.err), watching.err
    return time.monotonic() - started


# Its last checkpoint write on the way out is bounded (Store.quickly), not the 30 s of server
# selection; every printed change was saved already.
CHECKPOINTED = ["--checkpoint", "outage", "--from", "start"]


@pytest.mark.parametrize("extra", [[], CHECKPOINTED])
def test_ctrl_c_while_the_server_is_gone_exits_at_once(own_server: Any, extra: list[str]) -> None:
    cli = Cli(own_server.uri, "outage")
    assert cli.run("publish", "login", "-s", "alice", "-o", "json").returncode == 0
    watching = Running(cli.popen("watch", "-o", "json", *extra)).ready()
    if extra:
        watching.wait_for(lambda: len(watching.out) == 1, "the replayed event")
        # Saved, too: a Ctrl-C that lands while a change is printed and saved waits for the
        # save (a second Ctrl-C stops at once); this test is about a watch waiting out an outage.
        with pymongo.MongoClient(own_server.uri) as client:
            window = client["outage"]["evstream_checkpoint_window"]
            wait_for(lambda: window.count_documents({}) == 1, 30, "the checkpoint's save")
    own_server.kill()  # the watch is now waiting for a server to select
    took = interrupt(watching)
    assert took < QUICK, f"Ctrl-C took {took:.1f} s"


def test_ctrl_c_while_retrying_exits_at_once(own_server: Any) -> None:
    cli = Cli(own_server.uri, "outage")
    assert cli.run("publish", "login", "-s", "alice", "-o", "json").returncode == 0
    watching = Running(cli.popen("watch", "-o", "json")).ready()
    own_server.kill()
    # The watch notices once server selection gives up (30 s), then backs off and retries.
    watching.wait_for(lambda: any("retrying" in line for line in watching.err), "retrying", 90)
    took = interrupt(watching)
    assert took < QUICK, f"Ctrl-C took {took:.1f} s"
