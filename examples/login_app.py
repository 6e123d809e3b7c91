"""The article's app: a login service that records events, with a listener that keeps sessions.

Standard library and evstream's Python API only (docs/python-api.md).

    python examples/login_app.py --port 8000          # the app
    evstream rebuild sessions --follow                # the listener, in a second terminal

    curl -X POST localhost:8000/login -d '{"username": "alice"}'
    curl localhost:8000/sessions/alice

POST /login appends the user's `login` event; a user's first login also starts their session
(`session.started`), exactly once however many first logins race: that append carries
`expected_version=0`, and so does each login (the version the app decided on), so a request
that lost a race re-reads the stream and tries again. GET /sessions/<user> reads the
`sessions` read model that the listener keeps current.

Without --uri (or EVSTREAM_URI) it uses evstream's embedded dev store, as the CLI does.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import evstream

ATTEMPTS = 50


def record_login(log: evstream.Client, user: str, source: str) -> dict[str, Any]:
    """Append a login to the user's stream, starting their session first if it is new.

    Decide from the stream as it is, append at the version decided on, and on a Conflict (another
    request appended first) decide again: the usual loop of an event-sourced write.
    """
    for attempt in range(1, ATTEMPTS + 1):
        version = max((e["version"] for e in log.read(stream=user)), default=0)
        try:
            if version == 0:
                log.append(
                    "session.started",
                    user,
                    {"name": user.title(), "email": f"{user}@example.com"},
                    expected_version=0,
                )
                version = 1
            event = log.append(
                "login",
                user,
                {"username": user},
                meta={"source": source},
                expected_version=version,
            )
            return {"stream": user, "version": event["version"], "attempts": attempt}
        except evstream.Conflict:
            time.sleep(random.uniform(0, 0.002 * attempt))  # let the winner's append land
    raise evstream.Conflict(f"could not record a login for {user!r} in {ATTEMPTS} attempts")


class LoginApp(BaseHTTPRequestHandler):
    """POST /login and GET /sessions/<user>, over one evstream client shared by every thread."""

    log: evstream.Client  # set on the class by main()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/login":
            return self.reply(HTTPStatus.NOT_FOUND, {"error": "no such page"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            user = body["username"]
        except (ValueError, KeyError, TypeError):
            return self.reply(HTTPStatus.BAD_REQUEST, {"error": 'send {"username": "…"}'})
        try:
            result = record_login(self.log, user, source=self.client_address[0])
        except evstream.InvalidInput as exc:  # e.g. a user name that is not a valid stream
            return self.reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except evstream.Error as exc:
            return self.reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
        self.reply(HTTPStatus.CREATED, result)

    def do_GET(self) -> None:  # noqa: N802
        user = self.path.removeprefix("/sessions/")
        if user == self.path or not user:
            return self.reply(HTTPStatus.NOT_FOUND, {"error": "no such page"})
        try:
            session = self.log.state("sessions", user)
        except evstream.Error as exc:
            return self.reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
        if session is None:
            return self.reply(HTTPStatus.NOT_FOUND, {"error": f"no session for {user!r} yet"})
        self.reply(HTTPStatus.OK, session)

    def reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=_iso).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: one line per request would drown the listener's output


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def main() -> None:
    parser = argparse.ArgumentParser(description="The login app of the article, on evstream.")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--uri", default=None, help="MongoDB URI [default: EVSTREAM_URI, …]")
    parser.add_argument("--db", default=None, help="database [default: EVSTREAM_DB, …]")
    args = parser.parse_args()
    with evstream.connect(args.uri, args.db) as log:
        LoginApp.log = log
        server = ThreadingHTTPServer(("127.0.0.1", args.port), LoginApp)
        print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
        finally:
            server.server_close()


if __name__ == "__main__":
    main()
