"""Bad input, line by line: one clear stderr line naming the line, exit 2, nothing written."""

from __future__ import annotations

import json
from typing import Any

import pytest

GOOD = b'{"type": "t", "stream": "a"}\n'

BAD_LINES: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"type": "t", "stream": }', "not valid JSON"),
    ("truncated JSON", b'{"type": "t", "stream": "a"', "not valid JSON"),
    ("an array", b"[1, 2, 3]", "expected a JSON object, got an array"),
    ("a string", b'"login"', "expected a JSON object, got a string"),
    ("a number", b"42", "expected a JSON object, got a number"),
    ("null", b"null", "expected a JSON object, got null"),
    ("type a number", b'{"type": 1, "stream": "a"}', "type must be a string, not a number"),
    (
        "stream an object",
        b'{"type": "t", "stream": {"x": 1}}',
        "stream must be a string, not an object",
    ),
    (
        "data a list",
        b'{"type": "t", "stream": "a", "data": [1]}',
        "data must be a JSON object, not an array",
    ),
    (
        "meta a string",
        b'{"type": "t", "stream": "a", "meta": "x"}',
        "meta must be a JSON object, not a string",
    ),
    ("id a number", b'{"type": "t", "stream": "a", "id": 5}', "id must be a string, not a number"),
    ("empty type", b'{"type": "", "stream": "a"}', "type must not be empty"),
    ("empty stream", b'{"type": "t", "stream": "  "}', "stream must not be empty"),
    (
        "huge stream name",
        b'{"type": "t", "stream": "' + b"s" * 300 + b'"}',
        "stream is 300 characters long; the limit is 256",
    ),
    (
        "NUL in a stream name",
        b'{"type": "t", "stream": "a\\u0000b"}',
        "stream must not contain a NUL character",
    ),
    (
        "NUL in a data key",
        b'{"type": "t", "stream": "a", "data": {"k\\u0000": 1}}',
        "data has a key containing a NUL character",
    ),
    ("$ stream", b'{"type": "t", "stream": "$a"}', "stream '$a' must not start with '$'"),
    ("$ type", b'{"type": "$t", "stream": "a"}', "type '$t' must not start with '$'"),
    ("$ id", b'{"type": "t", "stream": "a", "id": "$i"}', "id '$i' must not start with '$'"),
    (
        "$ key in data",
        b'{"type": "t", "stream": "a", "data": {"$gt": 1}}',
        "data has a key '$gt' starting with '$'",
    ),
    (
        "negative expected version",
        b'{"type": "t", "stream": "a", "expected_version": -2}',
        "expected_version must be 0 or more, not -2",
    ),
    (
        "fractional expected version",
        b'{"type": "t", "stream": "a", "expected_version": 1.5}',
        "expected_version must be a whole number",
    ),
    (
        "string expected version",
        b'{"type": "t", "stream": "a", "expected_version": "1"}',
        "expected_version must be a whole number",
    ),
    ("unknown field", b'{"type": "t", "stream": "a", "payload": {}}', "unknown field 'payload'"),
    ("missing type", b'{"stream": "a"}', "missing field 'type'"),
    ("binary garbage", bytes(range(256)), "binary data"),
    ("latin-1 text", '{"type": "t", "stream": "café"}'.encode("latin-1"), "not UTF-8 text"),
    ("a BOM in the middle", b'\xef\xbb\xbf{"type": "t", "stream": "a"}', "not valid JSON"),
    ("ts not a date", b'{"type": "t", "stream": "a", "ts": 5}', "ts must be a date"),
    # Values no server can store, found before anything is written (issue 24, finding 1).
    (
        "a number beyond a double",
        b'{"type": "t", "stream": "a", "data": {"a": 1e400}}',
        "the number 1e400 is beyond the range of an 8-byte float",
    ),
    (
        "a negative number beyond a double",
        b'{"type": "t", "stream": "a", "meta": {"a": [-2.5E999]}}',
        "the number -2.5E999 is beyond the range of an 8-byte float",
    ),
    (
        "an expected version beyond 64 bits",
        b'{"type": "t", "stream": "a", "expected_version": 99999999999999999999}',
        "expected_version 99999999999999999999 is beyond MongoDB's 8-byte ints",
    ),
    (
        "an expected version whose next version is beyond 64 bits",
        b'{"type": "t", "stream": "a", "expected_version": 9223372036854775807}',
        "expected_version 9223372036854775807 is beyond MongoDB's 8-byte ints",
    ),
    (
        "an expected version of 1e30",
        b'{"type": "t", "stream": "a", "expected_version": 1e30}',
        "is beyond MongoDB's 8-byte ints",
    ),
    (
        "a stored version beyond 64 bits",
        b'{"type": "t", "stream": "a", "version": 1000000000000000000000000000000, '
        b'"ts": {"$date": "2026-01-01T00:00:00Z"}}',
        "version 1000000000000000000000000000000 is beyond MongoDB's 8-byte ints",
    ),
    # Lone UTF-16 surrogates anywhere (finding 7).
    (
        "a lone surrogate in data",
        b'{"type": "t", "stream": "a", "data": {"a": "\\ud800"}}',
        "data.a holds a lone UTF-16 surrogate",
    ),
    (
        "a lone surrogate in meta",
        b'{"type": "t", "stream": "a", "meta": {"a": ["x", "\\udc00y"]}}',
        "meta.a[1] holds a lone UTF-16 surrogate",
    ),
    (
        "a lone surrogate in a key",
        b'{"type": "t", "stream": "a", "data": {"\\udfff": 1}}',
        "holds a lone UTF-16 surrogate",
    ),
    (
        "a lone surrogate in the stream",
        b'{"type": "t", "stream": "a\\ud800"}',
        "stream holds a lone UTF-16 surrogate",
    ),
    (
        "a lone surrogate in the id",
        b'{"type": "t", "stream": "a", "id": "\\ud800"}',
        "id holds a lone UTF-16 surrogate",
    ),
    (
        "a lone surrogate in a copy",
        b'{"_id": "e1", "type": "t", "stream": "a", "version": 1, '
        b'"ts": {"$date": "2026-01-01T00:00:00Z"}, "data": {"a": "\\ud800"}}',
        "data.a holds a lone UTF-16 surrogate",
    ),
]


@pytest.mark.parametrize(("name", "line", "message"), BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_a_bad_line_from_a_file(
    cli: Any, db: Any, tmp_path: Any, name: str, line: bytes, message: str
) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(GOOD + GOOD + line + b"\n" + GOOD)
    r = cli("publish", "--file", str(path))
    assert r.exit_code == 2, (name, r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert errors[0].startswith("error: line 3: ") and message in errors[0], errors[0]
    assert errors[0].endswith("nothing was written")
    assert db.events.count_documents({}) == 0


@pytest.mark.parametrize(
    ("name", "line", "message"), BAD_LINES[:8], ids=[b[0] for b in BAD_LINES[:8]]
)
def test_a_bad_line_from_stdin_stops_after_the_good_ones(
    cli: Any, db: Any, name: str, line: bytes, message: str
) -> None:
    r = cli("publish", "--file", "-", input=GOOD + GOOD + line + b"\n" + GOOD)
    assert r.exit_code == 2
    assert f"line 3: {message}" in r.stderr and "2 event(s) before it were stored" in r.stderr
    assert db.events.count_documents({}) == 2


def test_very_long_line_of_nothing_but_spaces(cli: Any, db: Any) -> None:
    r = cli("publish", "--file", "-", "-o", "json", input=b" " * 2_000_000 + b"\n" + GOOD)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["published"] == 1


def test_a_directory_is_not_a_file(cli: Any, db: Any, tmp_path: Any) -> None:
    r = cli("publish", "--file", str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--data", '{"a": "\\ud800"}'],
        ["--meta", '{"a": "\\udc00"}'],
        ["--data", '{"a": "\udc80"}'],  # a byte that is not UTF-8 in the argument
        ["--id", "e\udced\udca0\udc80"],
        ["--stream", "s\ud800"],
    ],
)
def test_a_lone_surrogate_in_an_option_is_bad_input(cli: Any, db: Any, args: list[str]) -> None:
    if "--stream" not in args:
        args = [*args, "--stream", "s"]
    r = cli("publish", "t", *args)
    assert r.exit_code == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "lone UTF-16 surrogate" in r.stderr, r.stderr
    assert db.events.count_documents({}) == 0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ('{"a": 1e400}', "the number 1e400 is beyond the range of an 8-byte float"),
        ('{"a": [1, -1e309]}', "the number -1e309 is beyond the range of an 8-byte float"),
    ],
)
def test_a_number_beyond_a_double_in_data_is_bad_input(
    cli: Any, db: Any, option: str, message: str
) -> None:
    r = cli("publish", "t", "--stream", "s", "--data", option)
    assert r.exit_code == 2 and message in r.stderr, r.stderr
    assert db.events.count_documents({}) == 0


def test_an_expected_version_beyond_64_bits_is_bad_input(cli: Any, db: Any) -> None:
    r = cli("publish", "t", "--stream", "s", "--expected-version", str(10**30))
    assert r.exit_code == 2 and "beyond MongoDB's 8-byte ints" in r.stderr, r.stderr


def test_a_file_with_no_line_end_stops_at_the_line_bound(cli: Any, db: Any) -> None:
    # /dev/zero: one line that never ends. Checked first, it stops at the bound; nothing written.
    r = cli.run("publish", "--file", "/dev/zero", timeout=60)
    assert r.returncode == 2, r.stderr
    assert "line 1: line is over 17 MB" in r.stderr and "nothing was written" in r.stderr
    assert "Traceback" not in r.stderr


def test_skipping_a_line_with_no_end_stops_within_a_bound(cli: Any, db: Any) -> None:
    r = cli.run("publish", "--file", "/dev/zero", "--skip-invalid", timeout=60)
    assert r.returncode == 2, r.stderr
    assert "line 1: line has no end within" in r.stderr and "stopped reading there" in r.stderr


def test_a_file_that_cannot_be_read_is_one_input_error(cli: Any, db: Any) -> None:
    r = cli("publish", "--file", "/proc/self/mem")
    assert r.exit_code == 2, r.stderr
    assert r.stderr.strip() == "error: cannot read the input at line 1: Input/output error"
