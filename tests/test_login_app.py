"""The article's app end to end (examples/login-app): Express + mongoose write login events in
the app's own shape; `evstream rebuild sessions --follow` is the listener that keeps `sessions`
up to date, `evstream watch` runs beside it, and the app's own change stream (the Node driver's
`watch()`) sees each login.

Runs when node is on PATH and examples/login-app/node_modules exists (`.ci/run` installs it when
npm is there); this test installs nothing itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from waiting import wait_for

from evstream.embedded import free_port

APP = Path(__file__).resolve().parents[1] / "examples" / "login-app"


def app_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    for package in ("express", "mongoose"):
        if not (APP / "node_modules" / package).is_dir():
            return (
                f"{APP / 'node_modules'} has no {package}: run npm ci in examples/login-app "
                "(.ci/run does when npm is on the machine)"
            )
    return None


pytestmark = pytest.mark.skipif(app_missing() is not None, reason=app_missing() or "")


class Process:
    """A background process whose output lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args,
            cwd=APP,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def started(server_uri: str, db_name: str, db: Any) -> Iterator[dict[str, Any]]:
    """The app, the listener and a watcher on this test's database; all stopped afterwards."""
    port = free_port()
    evstream_env = {"EVSTREAM_URI": server_uri, "EVSTREAM_DB": db_name}
    app = Process(
        ["node", "app.js"], {"MONGODB_URI": server_uri, "MONGODB_DB": db_name, "PORT": str(port)}
    )
    running = [app]
    try:
        wait_for(lambda: app.saw("listening") or app.proc.poll() is not None, 60, "the app")
        assert app.proc.poll() is None, "\n".join(app.err)
        assert app.saw(f"(database {db_name})")
        listener = Process(
            [sys.executable, "-m", "evstream", "rebuild", "sessions", "--follow", "-o", "json"],
            evstream_env,
        )
        running.append(listener)
        watcher = Process([sys.executable, "-m", "evstream", "watch", "-o", "json"], evstream_env)
        running.append(watcher)
        # It watches from now: live once it says so, and it sees every login from then on.
        wait_for(
            lambda: (
                any("Ctrl-C to stop" in line for line in watcher.err)
                or watcher.proc.poll() is not None
            ),
            60,
            "the watch to go live",
        )
        assert watcher.proc.poll() is None, "\n".join(watcher.err)
        yield {
            "url": f"http://127.0.0.1:{port}",
            "app": app,
            "listener": listener,
            "watcher": watcher,
        }
    finally:
        for process in reversed(running):
            process.stop()


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        return json.loads(response.read())


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_app_writes_its_own_shape_and_its_change_stream_sees_it(
    started: dict[str, Any], db: Any
) -> None:
    """What does not need evstream's field map: the app's documents, and the Node driver's
    change stream on the dev store (which failed before cursor ids were sent as int64)."""
    url, app = started["url"], started["app"]
    first = post(f"{url}/login", {"userId": "alice", "username": "al"})
    post(f"{url}/logout", {"userId": "alice"})
    stored = list(db.events.find({"userId": "alice"}).sort("createdAt", 1))
    assert [doc["eventType"] for doc in stored] == ["login", "logout"]
    assert stored[0]["_id"] == ObjectId(first["id"])
    assert stored[0]["payload"]["username"] == "al"
    assert all("version" not in doc and "stream" not in doc for doc in stored)
    wait_for(lambda: app.saw("change: insert logout alice"), 30, "the app's own change stream")
    assert app.saw("change: insert login alice")


def test_the_listener_keeps_sessions_up_to_date_and_watch_shows_the_logins(
    started: dict[str, Any], db: Any
) -> None:
    """Every assertion here needs evstream to read the app's names through evstream.toml's
    [log] map; without it the app's documents are "not an event: no stream"."""
    url = started["url"]
    post(f"{url}/login", {"userId": "alice", "username": "al"})
    post(f"{url}/login", {"userId": "bob"})
    wait_for(lambda: db.sessions.find_one({"_id": "alice"}), 60, "alice's session")
    status, session = get(f"{url}/sessions/alice")
    assert status == 200
    assert session["status"] == "active" and session["login_count"] == 1
    assert session["username"] == "al"
    post(f"{url}/logout", {"userId": "alice"})
    wait_for(
        lambda: (db.sessions.find_one({"_id": "alice"}) or {}).get("status") == "signed_out",
        60,
        "the logout applied by the listener",
    )
    watcher = started["watcher"]

    # watch -o json prints each change with the document as stored: the app's own names.
    def logins_shown() -> list[dict[str, Any]]:
        shown = [json.loads(line) for line in list(watcher.out) if line.startswith("{")]
        docs = [change.get("doc") or {} for change in shown]
        return [doc for doc in docs if doc.get("eventType") == "login"]

    wait_for(lambda: len(logins_shown()) >= 2, 60, "watch showing both logins")
    assert {doc["userId"] for doc in logins_shown()} == {"alice", "bob"}
    assert not any("not an event" in line for line in started["listener"].err)
