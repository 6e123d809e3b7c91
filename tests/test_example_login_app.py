"""examples/login_app.py, the article's app: POST /login from 4 threads while
`evstream rebuild sessions --follow` listens; GET /sessions/<user> shows every login."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from waiting import wait_for

APP = Path(__file__).resolve().parent.parent / "examples" / "login_app.py"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]


def post(base: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(base: str, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(base + path, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_login_app_with_a_listener(cli: Any, db: Any, server_uri: str, db_name: str) -> None:
    app = subprocess.Popen(
        [sys.executable, str(APP), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **cli.env()},
    )
    listener = cli.popen("rebuild", "sessions", "--follow", "-o", "json")
    try:
        line = app.stdout.readline() if app.stdout else ""
        assert line.startswith("listening on "), line + (app.stderr.read() if app.stderr else "")
        base = line.split()[-1]
        assert get(base, "/sessions/alice")[0] == 404
        assert post(base, "/login", {"user": "x"})[0] == 400
        assert post(base, "/login", {"username": "$bad"})[0] == 400

        # 200 logins from 4 threads, over 7 users: requests for one user race each other.
        logins = [USERS[i % len(USERS)] for i in range(200)]
        results: list[tuple[int, dict[str, Any]]] = []

        def client(mine: list[str]) -> None:
            for user in mine:
                results.append(post(base, "/login", {"username": user}))

        threads = [threading.Thread(target=client, args=(logins[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert [status for status, _ in results] == [201] * 200, results[:3]
        assert any(body["attempts"] > 1 for _, body in results)  # there were races

        expected = collections.Counter(logins)

        def sessions_current() -> bool:
            return all(
                get(base, f"/sessions/{user}")[1].get("login_count") == n
                for user, n in expected.items()
            )

        wait_for(sessions_current, 120, "the listener to apply every login")
        for user, n in expected.items():
            status, session = get(base, f"/sessions/{user}")
            assert status == 200
            assert (session["login_count"], session["status"]) == (n, "active")
            assert session["email"] == f"{user}@example.com"
            assert session["events"] == n + 1  # session.started, once, and each login
            assert session["version"] == n + 1
        assert db.events.count_documents({"type": "session.started"}) == len(USERS)
    finally:
        listener.send_signal(signal.SIGINT)
        _, listener_err = listener.communicate(timeout=60)
        app.send_signal(signal.SIGINT)
        app.communicate(timeout=60)
    assert listener.returncode == 130, listener_err
