"""Other clients on evstream's dev store: every cursor id goes out as a BSON int64, so the Node
driver (6+) and mongosh can watch the log (nx-27017 sends a change stream's id as int32)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from evstream.embedded import CursorIdsAsInt64, cursor_ids_as_int64

ROOT = Path(__file__).resolve().parents[1]
APP_MODULES = ROOT / "examples" / "login-app" / "node_modules"
WATCH_JS = Path(__file__).parent / "clients" / "watch.js"
RAW = CodecOptions(document_class=RawBSONDocument)


def id_element_type(reply: Any) -> int:
    """The BSON type byte of a reply's `cursor.id` as it came over the wire."""
    raw = reply["cursor"].raw
    at = raw.index(b"id\x00") - 1
    return raw[at]


@pytest.mark.parametrize("cursor_id", [0, 1000, 2**31 - 1, 10**12])
def test_cursor_ids_are_encoded_as_int64(cursor_id: int) -> None:
    reply = cursor_ids_as_int64(
        {"ok": 1, "cursor": {"id": cursor_id, "ns": "d.c", "firstBatch": []}}
    )
    decoded = bson.decode(bson.encode(reply), codec_options=RAW)
    assert id_element_type(decoded) == 0x12  # int64, as MongoDB sends every cursor id
    assert decoded["cursor"]["id"] == cursor_id


@pytest.mark.parametrize(
    "reply",
    [
        {"ok": 1},
        {"ok": 0, "errmsg": "x"},
        {"cursor": "not a table"},
        {"cursor": {"ns": "d.c"}},
        None,
    ],
)
def test_replies_without_a_cursor_id_are_untouched(reply: Any) -> None:
    before = json.dumps(reply)
    assert json.dumps(cursor_ids_as_int64(reply)) == before


def test_handler_wrapper_converts_commands_and_inserts_and_delegates_the_rest() -> None:
    class Handler:
        connections = 0

        def handle_command(self, msg: dict[str, Any]) -> tuple[int, Any]:
            return 7, {"ok": 1, "cursor": {"id": 1000, "firstBatch": []}}

        def handle_insert(self, msg: dict[str, Any]) -> tuple[int, Any]:
            return 8, {"ok": 1, "n": 1}

        def increment_connections(self) -> None:
            self.connections += 1

    wrapped = CursorIdsAsInt64(Handler())
    request_id, reply = wrapped.handle_command({})
    assert request_id == 7 and type(reply["cursor"]["id"]) is Int64
    assert wrapped.handle_insert({}) == (8, {"ok": 1, "n": 1})
    wrapped.increment_connections()
    assert wrapped.connections == 1


def test_the_server_sends_change_stream_and_exhausted_cursor_ids_as_int64(db: Any) -> None:
    """Over the wire from the test server (evstream's dev store process, or a real MongoDB)."""
    db.events.insert_one({"_id": "a"})
    opened = db.command(
        "aggregate", "events", pipeline=[{"$changeStream": {}}], cursor={}, codec_options=RAW
    )
    try:
        assert id_element_type(opened) == 0x12
    finally:
        cursor_id = bson.decode(opened.raw)["cursor"]["id"]
        if cursor_id:
            db.command("killCursors", "events", cursors=[Int64(cursor_id)])
    found = db.command("find", "events", filter={}, codec_options=RAW)
    assert id_element_type(found) == 0x12


def node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (APP_MODULES / "mongodb").is_dir():
        return (
            f"{APP_MODULES} has no mongodb package: run npm ci in examples/login-app "
            "(.ci/run does when npm is on the machine)"
        )
    return None


@pytest.mark.skipif(node_missing() is not None, reason=node_missing() or "")
def test_the_node_driver_watches_the_log(server_uri: str, db_name: str, db: Any) -> None:
    """The Node driver's `collection.watch()`, which failed with `BSON element "id" is
    missing` while the dev store sent change-stream cursor ids as int32."""
    event_id = f"node-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        ["node", str(WATCH_JS), server_uri, db_name, "events", event_id],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_PATH": str(APP_MODULES)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"operationType": "insert", "id": event_id}
    assert db.events.find_one({"_id": event_id}) is not None
