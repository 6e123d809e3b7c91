"""Fixtures: an nx-27017 server per test session (or EVSTREAM_TEST_URI), a database per test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mongomock
import pymongo
import pytest
from servers import ServerProcess
from typer.testing import CliRunner

from evstream.cli import app
from evstream.storage import Store, ensure_indexes

TEST_URI = os.environ.get("EVSTREAM_TEST_URI")
ENV_VARS = (
    "EVSTREAM_URI",
    "MONGODB_URI",
    "EVSTREAM_DB",
    "EVSTREAM_OUTPUT",
    "EVSTREAM_HOME",
    "EVSTREAM_CONTEXT",
    "EVSTREAM_PROJECTIONS",
    "NO_COLOR",
    "FORCE_COLOR",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test sees the developer's own configuration or touches their data directory."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EVSTREAM_HOME", str(tmp_path_factory.mktemp("home")))
    # Nor the developer's own contexts (docs/configuration.md).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


@pytest.fixture(scope="session")
def server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of the server integration tests use: EVSTREAM_TEST_URI, or a fresh nx-27017."""
    if TEST_URI:
        yield TEST_URI
        return
    server = ServerProcess(tmp_path_factory.mktemp("nx")).start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server for this test alone, which it may kill and restart (fault tests)."""
    server = ServerProcess(tmp_path / "own-server").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mock_store() -> Store:
    """A Store on mongomock, for the append logic's plain CRUD, where mongomock is faithful."""
    client: Any = mongomock.MongoClient(tz_aware=True)
    store = Store(client, client["unit"], "mongodb://mock", False, "mongomock")
    ensure_indexes(store)
    return store


@pytest.fixture
def db_name(request: pytest.FixtureRequest) -> str:
    """A database name unique to this test."""
    base = re.sub(r"[^A-Za-z0-9]", "_", request.node.name)[:30]
    return f"t_{base}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(server_uri: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    c: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        server_uri, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    yield c
    c.close()


@pytest.fixture
def db(client: pymongo.MongoClient[dict[str, Any]], db_name: str) -> Iterator[Any]:
    """The test's database, dropped afterwards."""
    yield client[db_name]
    client.drop_database(db_name)


def write_numbered_events(path: Path, total: int, streams: int) -> Path:
    """An NDJSON file of `total` events with ids e000000…, round robin over `streams` streams."""
    with path.open("w") as out:
        for i in range(total):
            event = {"type": "t", "stream": f"s{i % streams}", "id": f"e{i:06d}", "data": {"n": i}}
            out.write(json.dumps(event) + "\n")
    return path


@dataclass
class Cli:
    """Runs evstream against the test's server and database, in-process or as a subprocess."""

    uri: str
    db: str

    def env(self, **extra: str) -> dict[str, str]:
        return {"EVSTREAM_URI": self.uri, "EVSTREAM_DB": self.db, **extra}

    def __call__(self, *args: str, input: str | bytes | None = None, **env: str) -> Any:
        """In-process through Typer's CliRunner; stdout and stderr apart."""
        return CliRunner().invoke(
            app, list(args), input=input, env=self.env(**env), catch_exceptions=False
        )

    def run(
        self, *args: str, input: str | bytes | None = None, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """As a real process: `python -m evstream ARGS`."""
        full_env = {**os.environ, **self.env(**env)}
        return subprocess.run(
            [sys.executable, "-m", "evstream", *args],
            input=input.decode() if isinstance(input, bytes) else input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )

    def popen(self, *args: str, stdin: Any = subprocess.PIPE, **env: str) -> subprocess.Popen[str]:
        """A background evstream process (watchers, kill tests); its stdin a pipe unless given."""
        full_env = {**os.environ, **self.env(**env)}
        return subprocess.Popen(
            [sys.executable, "-m", "evstream", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )


@pytest.fixture
def cli(server_uri: str, db_name: str, db: Any) -> Cli:
    """The CLI pointed at this test's database (which `db` drops afterwards)."""
    return Cli(server_uri, db_name)
