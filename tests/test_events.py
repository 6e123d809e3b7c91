"""Unit tests of the event model: validation, ids, redaction, line decoding."""

from __future__ import annotations

import io
import re
import time
from datetime import datetime, timezone

import pytest

from evstream.events import (
    REDACTED,
    EventInput,
    InvalidEvent,
    check_name,
    decode_line,
    event_from_object,
    event_id_time_ms,
    is_secret_key,
    iter_lines,
    new_event_id,
    redact,
    redact_event,
)

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class TestIds:
    def test_shape_is_uuid_version_7(self) -> None:
        assert UUID7.match(new_event_id())

    def test_ids_sort_in_generation_order_and_are_unique(self) -> None:
        ids = [new_event_id() for _ in range(20_000)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)

    def test_id_carries_its_creation_time(self) -> None:
        before = time.time_ns() // 1_000_000
        ms = event_id_time_ms(new_event_id())
        after = time.time_ns() // 1_000_000
        assert ms is not None and before <= ms <= after + 1

    def test_foreign_ids_have_no_time(self) -> None:
        assert event_id_time_ms("order-42") is None


class TestNames:
    @pytest.mark.parametrize(
        "value", ["login", "session.started", "a", "x" * 256, "ünïcode", "a b"]
    )
    def test_accepted(self, value: str) -> None:
        assert check_name("type", value) == value

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("", "must not be empty"),
            ("   ", "must not be empty"),
            ("x" * 257, "257 characters long; the limit is 256"),
            ("$where", "must not start with '$'"),
            ("a\x00b", "NUL"),
            ("a\nb", "control characters"),
            (42, "must be a string, not a number"),
            (None, "must be a string, not null"),
            (["a"], "must be a string, not an array"),
            (True, "must be a string, not a boolean"),
        ],
    )
    def test_rejected_with_a_reason(self, value: object, message: str) -> None:
        with pytest.raises(InvalidEvent, match=re.escape(message)):
            check_name("stream", value)


class TestEventFromObject:
    def test_minimal(self) -> None:
        event = event_from_object({"type": "login", "stream": "alice"})
        assert event == EventInput(type="login", stream="alice", data={})

    def test_all_fields(self) -> None:
        ts = datetime(2026, 1, 2, tzinfo=timezone.utc)
        event = event_from_object(
            {
                "type": "t",
                "stream": "s",
                "data": {"a": [1, {"b": 2}]},
                "meta": {"source": "x"},
                "id": "e1",
                "expected_version": 3,
                "ts": ts,
            },
            line=7,
        )
        assert (event.id, event.expected_version, event.ts, event.line) == ("e1", 3, ts, 7)
        assert event.meta == {"source": "x"}

    def test_a_stored_event_keeps_its_id_and_version(self) -> None:
        event = event_from_object(
            {"_id": "e9", "stream": "s", "version": 4, "type": "t", "data": {}}
        )
        assert (event.id, event.expected_version) == ("e9", 3)

    def test_a_watch_json_line_is_unwrapped(self) -> None:
        line = {
            "op": "insert",
            "collection": "events",
            "key": {"_id": "e1"},
            "doc": {"_id": "e1", "stream": "s", "version": 1, "type": "t", "data": {"k": 1}},
        }
        event = event_from_object(line)
        assert (event.id, event.stream, event.expected_version, event.data) == (
            "e1",
            "s",
            0,
            {"k": 1},
        )

    @pytest.mark.parametrize(
        ("obj", "message"),
        [
            ([1, 2], "expected a JSON object, got an array"),
            ("login", "expected a JSON object, got a string"),
            (None, "expected a JSON object, got null"),
            ({"stream": "s"}, "missing field 'type'"),
            ({"type": "t"}, "missing field 'stream'"),
            ({"type": "t", "stream": "s", "colour": 1}, "unknown field 'colour'"),
            ({"type": "t", "stream": "s", "data": [1]}, "data must be a JSON object, not an array"),
            ({"type": "t", "stream": "s", "data": "x"}, "data must be a JSON object, not a string"),
            ({"type": "t", "stream": "s", "meta": 5}, "meta must be a JSON object, not a number"),
            ({"type": "t", "stream": "s", "data": {"$set": 1}}, "key '$set' starting with '$'"),
            ({"type": "t", "stream": "s", "data": {"a": {"$x": 1}}}, "data.a has a key '$x'"),
            ({"type": "t", "stream": "s", "expected_version": -1}, "must be 0 or more, not -1"),
            ({"type": "t", "stream": "s", "expected_version": 1.5}, "whole number"),
            ({"type": "t", "stream": "s", "expected_version": "2"}, "whole number"),
            ({"type": "t", "stream": "s", "expected_version": True}, "whole number"),
            ({"type": "t", "stream": "s", "id": 7}, "id must be a string"),
            ({"type": "t", "stream": "s", "id": "a", "_id": "b"}, "id and _id differ"),
            ({"type": "t", "stream": "s", "ts": "yesterday"}, "ts must be a date"),
            ({"type": "t", "stream": "s", "version": 0}, "version must be 1 or more"),
            ({"type": "t", "stream": "s", "version": 3, "expected_version": 1}, "disagree"),
            ({"op": "delete", "collection": "events", "key": {}, "doc": None}, "only inserts"),
        ],
    )
    def test_rejected(self, obj: object, message: str) -> None:
        with pytest.raises(InvalidEvent, match=re.escape(message)):
            event_from_object(obj)

    def test_errors_name_the_line(self) -> None:
        with pytest.raises(InvalidEvent, match=r"^line 12: missing field 'type'$"):
            event_from_object({"stream": "s"}, line=12)


class TestLines:
    def test_blank_and_crlf_and_bom(self) -> None:
        assert decode_line(b"\xef\xbb\xbf{}\r\n", 1) == "{}"
        assert decode_line(b'{"a":1}\r\n', 2) == '{"a":1}'
        assert decode_line(b"  \r\n", 3) is None

    def test_binary_and_bad_utf8(self) -> None:
        with pytest.raises(InvalidEvent, match="line 4: binary data"):
            decode_line(b"\x00\x01\x02", 4)
        with pytest.raises(InvalidEvent, match=r"line 5: not UTF-8 text \(byte 3\)"):
            decode_line(b'{"\xff', 5)

    def test_an_overlong_line_is_skipped_without_holding_it(self) -> None:
        source = io.BytesIO(b"a\n" + b"x" * 5000 + b"\nb\n")
        lines = list(iter_lines(source, limit=1000))
        assert lines == [(1, b"a\n"), (2, None), (3, b"b\n")]
        with pytest.raises(InvalidEvent, match="line 2: line is over"):
            decode_line(None, 2)


class TestSecrets:
    @pytest.mark.parametrize(
        "key",
        [
            "password",
            "Password",
            "db_password",
            "passwd",
            "secret",
            "client_secret",
            "token",
            "accessToken",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "Authorization",
            "credentials",
            "private_key",
            "pwd",
            "auth",
            "refresh-token",
            "session_cookie",
            "ssh_key",
            "signing_key",
            "encryption_key",
            "db_pass",
            "adminPwd",
            "passcode",
            "auth_header",
            "mfa_code",
            "totp",
            "cvv",
        ],
    )
    def test_secret_keys(self, key: str) -> None:
        assert is_secret_key(key)

    @pytest.mark.parametrize(
        "key",
        [
            "username",
            "email",
            "name",
            "method",
            "keyboard",
            "author",
            "path",
            "compass",
            "bypass",
            "key",
            "monkey",
            "passenger_count",
        ],
    )
    def test_ordinary_keys(self, key: str) -> None:
        assert not is_secret_key(key)

    def test_redaction_is_deep_and_reports_paths(self) -> None:
        value = {"user": "a", "password": "hunter2", "nested": [{"api_key": "k"}], "token": None}
        clean, paths = redact(value, "data")
        assert clean == {
            "user": "a",
            "password": REDACTED,
            "nested": [{"api_key": REDACTED}],
            "token": None,
        }
        assert paths == ["data.password", "data.nested[0].api_key"]
        assert value["password"] == "hunter2"  # the input is not modified

    def test_redact_event_covers_data_and_meta(self) -> None:
        event = EventInput(
            type="t", stream="s", data={"secret": "x"}, meta={"authorization": "Bearer y"}
        )
        assert redact_event(event) == ["data.secret", "meta.authorization"]
        assert event.data == {"secret": REDACTED} and event.meta == {"authorization": REDACTED}

    def test_already_redacted_values_are_not_reported_again(self) -> None:
        assert redact({"password": REDACTED})[1] == []
