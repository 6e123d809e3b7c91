"""A server out of disk space (issue 24, finding 5): its own line and exit 3, never blaming the
input, and no driver exception's document dump (a bulk write's reply holds the documents)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, OperationFailure

from evstream.embedded import start_failure
from evstream.errors import EventRefused, ExitCode, StorageFull
from evstream.events import EventInput
from evstream.storage.errors import translate_operation_failure
from evstream.storage.log import refused

SECRET = "hunter2-very-secret"
DISK_FULL = {"index": 0, "code": 8, "errmsg": "database or disk is full"}


def bulk_error(write_error: dict[str, Any]) -> BulkWriteError:
    """What pymongo raises for a failed bulk write: its reply names the document it failed on."""
    op = {"_id": "e1", "stream": "alice", "data": {"password": SECRET}}
    return BulkWriteError({"writeErrors": [{**write_error, "op": op}], "nInserted": 0})


@pytest.mark.parametrize(
    "error",
    [
        bulk_error(DISK_FULL),
        bulk_error({"index": 0, "code": 14031, "errmsg": "Disk space is low"}),
        OperationFailure("No space left on device", 1, {"errmsg": "No space left on device"}),
    ],
)
def test_out_of_space_is_its_own_error_with_exit_3(error: OperationFailure) -> None:
    found = translate_operation_failure(error)
    assert isinstance(found, StorageFull) and found.exit_code == ExitCode.UNREACHABLE == 3
    assert found.line().startswith("the server is out of disk space (")
    assert SECRET not in found.line() and "full error" not in found.line()


def test_a_bulk_write_error_never_prints_its_documents() -> None:
    error = bulk_error({"index": 0, "code": 121, "errmsg": "Document failed validation"})
    assert SECRET in str(error)  # pymongo's own message holds the document
    found = translate_operation_failure(error)
    assert found.line() == "the server refused: Document failed validation"


def test_a_full_disk_does_not_blame_the_event() -> None:
    event = EventInput(type="t", stream="a", data={}, line=7)
    assert isinstance(refused(event, {"code": 121, "errmsg": "failed validation"}), EventRefused)
    full = refused(event, {"code": 8, "errmsg": "database or disk is full"})
    assert isinstance(full, StorageFull) and not isinstance(full, EventRefused)
    assert full.message == "the server is out of disk space (database or disk is full) at line 7"


def test_publish_on_a_full_disk_exits_3_and_says_what_was_stored(
    cli: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Collection.insert_many
    calls = [0]

    def insert_many(self: Collection, docs: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            return real(self, docs, *args, **kwargs)
        raise bulk_error(DISK_FULL)

    monkeypatch.setattr(Collection, "insert_many", insert_many)
    path = tmp_path / "in.ndjson"
    path.write_text("".join(json.dumps({"type": "t", "stream": "a", "id": f"e{i}"}) + "\n"
                            for i in range(5)))  # fmt: skip
    r = cli("publish", "--file", str(path), "--batch-size", "2")
    assert r.exit_code == 3, r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("error: the server is out of disk space (database or disk is full) ")
    assert "2 event(s) before it were stored" in line and "refused" not in line
    assert SECRET not in r.stderr


def test_rebuild_on_a_full_disk_exits_3_without_the_drivers_dump(
    cli: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("seed").exit_code == 0

    def bulk_write(self: Collection, ops: Any, *args: Any, **kwargs: Any) -> Any:
        raise bulk_error(DISK_FULL)

    monkeypatch.setattr(Collection, "bulk_write", bulk_write)
    r = cli("rebuild-sessions")
    assert r.exit_code == 3, r.stderr
    assert r.stderr.startswith("error: the server is out of disk space (database or disk is full)")
    assert (
        SECRET not in r.stderr and "writeErrors" not in r.stderr and len(r.stderr.splitlines()) == 1
    )


def test_a_store_that_cannot_start_names_the_cause_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "2026-12-07 nx_27017 ERROR Error handling OP_MSG\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    return Connection(\n'
        "sqlite3.OperationalError: disk I/O error\nTraceback (most recent call last):\n"
        '  File "y.py", line 3, in g\n    return\n'
    )
    error = start_failure(1, log, tmp_path / "data")
    assert error.line().startswith(
        "the embedded dev store exited at start (code 1): sqlite3.OperationalError: disk I/O error"
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None,
    reason="needs root to mount a small tmpfs (the unit tests above fake the server's error)",
)
def test_a_real_full_disk_with_the_dev_store(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    env = {**os.environ, "EVSTREAM_HOME": str(disk / "home")}
    for name in ("EVSTREAM_URI", "MONGODB_URI", "EVSTREAM_DB"):
        env.pop(name, None)

    def evstream(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "evstream", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    try:
        big = tmp_path / "big.ndjson"
        big.write_text("".join(
            json.dumps({"type": "t", "stream": f"u{i % 50}", "id": f"e{i}", "data": {"p": "x" * 300}})
            + "\n" for i in range(20_000)
        ))  # fmt: skip
        r = evstream("publish", "--file", str(big))
        assert r.returncode == 3, r.stderr
        assert "the server is out of disk space" in r.stderr and "refused" not in r.stderr
        evstream("server", "stop")
        r = evstream("status")
        assert r.returncode == 3, r.stderr
        assert "the embedded dev store cannot start: the disk holding" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        evstream("server", "stop")
        subprocess.run(["umount", "-l", str(disk)], check=False)
