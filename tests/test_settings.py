"""Configuration resolution, URI masking, and driver errors turned into evstream's own."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    InvalidURI,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from evstream.errors import EvstreamError, ExitCode
from evstream.settings import default_home, mask_uri, resolve_uri, scrub, uri_password
from evstream.storage import translate_errors

URI = "mongodb://app:p%40ss:w0rd@db1.example.com:27017,db2/?replicaSet=rs0"


@pytest.mark.parametrize(
    ("option", "env", "expected"),
    [
        (
            "mongodb://opt",
            {"EVSTREAM_URI": "mongodb://ev", "MONGODB_URI": "mongodb://mdb"},
            "mongodb://opt",
        ),
        (None, {"EVSTREAM_URI": "mongodb://ev", "MONGODB_URI": "mongodb://mdb"}, "mongodb://ev"),
        (None, {"MONGODB_URI": "mongodb://mdb"}, "mongodb://mdb"),
        (None, {"EVSTREAM_URI": "", "MONGODB_URI": ""}, None),
        (None, {}, None),
    ],
)
def test_uri_precedence(option: str | None, env: dict[str, str], expected: str | None) -> None:
    assert resolve_uri(option, env) == expected


def test_home(tmp_path: Path) -> None:
    assert default_home({"EVSTREAM_HOME": str(tmp_path)}) == tmp_path
    assert default_home({"XDG_DATA_HOME": str(tmp_path)}) in (
        tmp_path / "evstream",
        Path.home() / "Library" / "Application Support" / "evstream",
    )


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        (URI, "mongodb://app:****@db1.example.com:27017,db2/?replicaSet=rs0"),
        (
            "mongodb+srv://u:pw@cluster0.x.mongodb.net/db",
            "mongodb+srv://u:****@cluster0.x.mongodb.net/db",
        ),
        ("mongodb://localhost:27017", "mongodb://localhost:27017"),
        ("mongodb://user@host/", "mongodb://user@host/"),
        ("not a uri", "not a uri"),
    ],
)
def test_mask_uri(uri: str, masked: str) -> None:
    assert mask_uri(uri) == masked


def test_scrub_removes_raw_and_decoded_password() -> None:
    assert uri_password(URI) == "p%40ss:w0rd"
    message = "auth failed for p%40ss:w0rd (that is p@ss:w0rd)"
    assert scrub(message, URI) == "auth failed for **** (that is ****)"
    assert scrub("nothing here", None) == "nothing here"


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (InvalidURI("bad p%40ss:w0rd"), ExitCode.USAGE, "invalid MongoDB URI: bad ****"),
        (ConfigurationError("unknown option"), ExitCode.USAGE, "invalid MongoDB URI or option"),
        (
            ServerSelectionTimeoutError(
                "db1:27017: timed out, Timeout: 5s, Topology Description: ..."
            ),
            ExitCode.UNREACHABLE,
            "cannot reach mongodb://app:****@db1.example.com:27017,db2/?replicaSet=rs0: db1:27017: timed out",
        ),
        (
            AutoReconnect("connection reset"),
            ExitCode.UNREACHABLE,
            "lost the connection to the server: connection reset",
        ),
        (
            OperationFailure(
                "Authentication failed.",
                code=18,
                details={"errmsg": "Authentication failed.", "code": 18},
            ),
            ExitCode.UNREACHABLE,
            "authentication failed: Authentication failed. (check the user name",
        ),
        (
            OperationFailure("not authorized on shop", code=13),
            ExitCode.UNREACHABLE,
            "not authorised on shop",
        ),
        (
            # Code 13 is a missing privilege, not a wrong password: the action is named.
            OperationFailure(
                "not authorized on shop to execute command "
                '{ createIndexes: "events", indexes: [ { key: { stream: 1 } } ] }',
                code=13,
            ),
            ExitCode.UNREACHABLE,
            "not authorised to createIndexes on shop.events",
        ),
        (
            OperationFailure("Index already exists with a different name: ts_1", code=85),
            ExitCode.UNSUPPORTED,
            "an index conflicts with one evstream needs",
        ),
        (
            OperationFailure("Resume of change stream was not possible", code=286),
            ExitCode.USAGE,
            "ChangeStreamHistoryLost",
        ),
        (
            OperationFailure(
                "The $changeStream stage is only supported on replica sets", code=40573
            ),
            ExitCode.UNSUPPORTED,
            "only supported on replica sets",
        ),
        (OperationFailure("boom", code=2), ExitCode.UNEXPECTED, "the server refused: boom"),
    ],
)
def test_driver_errors_become_evstream_errors(exc: Exception, code: ExitCode, text: str) -> None:
    with pytest.raises(EvstreamError) as caught, translate_errors(URI):
        raise exc
    assert caught.value.exit_code == code
    assert text in caught.value.line()
    assert "w0rd" not in caught.value.line()
