"""A TCP proxy on 127.0.0.1 that plays a slow link between evstream and a test server.

It forwards MongoDB wire messages both ways and holds back replies as a rule says: the rule
sees each command (the first section of an OP_MSG request) and decides how long its reply
takes to arrive. nx-27017 answers everything at once; a real deployment's first getMore
after a long read can take seconds (a large oplog backlog, mongos waiting on idle shards, a
WAN link). Used by tests/test_slow_link.py.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import bson

OP_MSG = 2013
Rule = Callable[[dict[str, Any], "SlowLink"], float]


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        try:
            chunk = sock.recv(n)
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_message(sock: socket.socket) -> tuple[bytes, int, int, int] | None:
    header = _recv_exact(sock, 16)
    if header is None:
        return None
    length, request_id, response_to, op = struct.unpack("<iiii", header)
    body = _recv_exact(sock, length - 16)
    if body is None:
        return None
    return header + body, request_id, response_to, op


def _command(message: bytes) -> dict[str, Any] | None:
    """The command document of an OP_MSG (its kind-0 section), or None."""
    if len(message) < 21 or message[20] != 0:
        return None
    (size,) = struct.unpack_from("<i", message, 21)
    try:
        return bson.decode(message[21 : 21 + size])
    except Exception:  # noqa: BLE001 - not ours to judge: forward it as it is
        return None


class SlowLink:
    """Listens on a free loopback port and forwards to `upstream_port`; `rule(command, link)`
    gives the delay in seconds for that command's reply. `stream_cursors` holds the ids of
    change-stream cursors seen (from the replies to `aggregate` with `$changeStream`)."""

    def __init__(self, upstream_port: int, rule: Rule) -> None:
        self.upstream_port = upstream_port
        self.rule = rule
        self.stream_cursors: set[int] = set()
        self.commands: list[tuple[str, float]] = []  # (command name, delay) in order
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closing = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def close(self) -> None:
        self.closing.set()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.close()
                except OSError:
                    pass

    def __enter__(self) -> SlowLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.sockets += [client, server]
            pending: dict[int, dict[str, Any] | None] = {}
            threading.Thread(
                target=self._requests, args=(client, server, pending), daemon=True
            ).start()
            threading.Thread(
                target=self._replies, args=(server, client, pending), daemon=True
            ).start()

    def _requests(self, client: socket.socket, server: socket.socket, pending: dict) -> None:
        while True:
            message = _read_message(client)
            if message is None:
                break
            raw, request_id, _, op = message
            pending[request_id] = _command(raw) if op == OP_MSG else None
            try:
                server.sendall(raw)
            except OSError:
                break
        for sock in (client, server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _replies(self, server: socket.socket, client: socket.socket, pending: dict) -> None:
        while True:
            message = _read_message(server)
            if message is None:
                break
            raw, _, response_to, op = message
            command = pending.pop(response_to, None)
            if command is not None:
                pipeline = command.get("pipeline") or [{}]
                if "aggregate" in command and "$changeStream" in (pipeline[0] or {}):
                    reply = _command(raw) or {}
                    cursor = (reply.get("cursor") or {}).get("id")
                    if cursor:
                        with self.lock:
                            self.stream_cursors.add(int(cursor))
                delay = self.rule(command, self)
                with self.lock:
                    self.commands.append((next(iter(command), "?"), delay))
                if delay > 0:
                    threading.Event().wait(delay)  # the slow link itself, not a test's wait
            try:
                client.sendall(raw)
            except OSError:
                break
        for sock in (client, server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FirstGetMoreAfterRead:
    """The rule of the slow-link test: opening a change stream takes `open_delay` (mongos
    opening cursors on every shard), and the stream's first getMore after each log read
    (a find on `events`) takes `getmore_delay`; everything else answers at once."""

    def __init__(self, open_delay: float, getmore_delay: float) -> None:
        self.open_delay = open_delay
        self.getmore_delay = getmore_delay
        self.read_since_getmore = False
        self.delayed_getmores = 0
        self.lock = threading.Lock()

    def __call__(self, command: dict[str, Any], link: SlowLink) -> float:
        with self.lock:
            pipeline = command.get("pipeline") or [{}]
            if "aggregate" in command and "$changeStream" in (pipeline[0] or {}):
                return self.open_delay
            if command.get("find") == "events":
                self.read_since_getmore = True
                return 0.0
            if "getMore" in command:
                if int(command["getMore"]) not in link.stream_cursors:
                    return 0.0  # the read's own batches
                if self.read_since_getmore:
                    self.read_since_getmore = False
                    self.delayed_getmores += 1
                    return self.getmore_delay
            return 0.0
