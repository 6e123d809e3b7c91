"""`evstream publish` through the real CLI against a real server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from bson import json_util
from bson.json_util import JSONOptions

AWARE = JSONOptions(tz_aware=True)


def ndjson(rows: list[Any]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def stored(db: Any, stream: str | None = None) -> list[dict[str, Any]]:
    query = {"stream": stream} if stream else {}
    return list(db.events.find(query).sort([("stream", 1), ("version", 1)]))


class TestOneEvent:
    def test_prints_the_stored_event_as_json(self, cli: Any, db: Any) -> None:
        r = cli(
            "publish", "login", "--stream", "alice", "--data", '{"username": "alice"}', "-o", "json"
        )
        assert r.exit_code == 0, r.stderr
        printed = json_util.loads(r.stdout, json_options=AWARE)
        [doc] = stored(db)
        assert printed == doc
        assert (doc["stream"], doc["version"], doc["type"], doc["data"]) == (
            "alice",
            1,
            "login",
            {"username": "alice"},
        )
        assert doc["ts"].tzinfo is not None and isinstance(doc["_id"], str)

    def test_pretty_output_names_stream_and_version(self, cli: Any, db: Any) -> None:
        r = cli("publish", "login", "-s", "bob", "-d", '{"username": "bob"}', "-o", "pretty")
        assert r.exit_code == 0, r.stderr
        assert "login" in r.stdout and "bob@1" in r.stdout and '"bob"' in r.stdout

    def test_appends_at_the_stream_end(self, cli: Any, db: Any) -> None:
        for _ in range(3):
            assert cli("publish", "login", "-s", "alice").exit_code == 0
        assert [d["version"] for d in stored(db, "alice")] == [1, 2, 3]

    def test_expected_version_conflict_exits_5_and_writes_nothing(self, cli: Any, db: Any) -> None:
        assert (
            cli("publish", "session.started", "-s", "alice", "--expected-version", "0").exit_code
            == 0
        )
        r = cli("publish", "login", "-s", "alice", "--expected-version", "0")
        assert r.exit_code == 5
        assert r.stderr.strip().endswith(
            "stream 'alice' is at version 1, not the expected version 0; nothing was written"
        )
        assert len(r.stderr.strip().splitlines()) == 1  # the one error line
        assert len(stored(db)) == 1
        assert cli("publish", "login", "-s", "alice", "--expected-version", "1").exit_code == 0
        assert [d["type"] for d in stored(db)] == ["session.started", "login"]

    def test_same_id_twice_is_stored_once(self, cli: Any, db: Any) -> None:
        first = cli("publish", "login", "-s", "alice", "--id", "evt-1", "-o", "json")
        second = cli("publish", "login", "-s", "alice", "--id", "evt-1", "-o", "json")
        assert first.exit_code == second.exit_code == 0
        assert "already stored" in second.stderr
        assert json_util.loads(first.stdout, json_options=AWARE) == json_util.loads(
            second.stdout, json_options=AWARE
        )
        assert len(stored(db)) == 1

    def test_secrets_are_redacted_with_a_warning(self, cli: Any, db: Any) -> None:
        r = cli(
            "publish",
            "login",
            "-s",
            "alice",
            "-d",
            '{"user": "alice", "password": "hunter2"}',
            "--meta",
            '{"authorization": "Bearer abc"}',
            "-o",
            "json",
        )
        assert r.exit_code == 0
        assert "redacted data.password, meta.authorization" in r.stderr
        assert "hunter2" not in r.stdout + r.stderr
        [doc] = stored(db)
        assert doc["data"] == {"user": "alice", "password": "[redacted]"}
        assert doc["meta"] == {"authorization": "[redacted]"}

    def test_keep_secrets_opts_out(self, cli: Any, db: Any) -> None:
        r = cli("publish", "login", "-s", "alice", "-d", '{"password": "p"}', "--keep-secrets")
        assert r.exit_code == 0 and "redacted" not in r.stderr
        assert stored(db)[0]["data"] == {"password": "p"}

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["login"], "give an event TYPE and --stream"),
            (["login", "-s", "$x"], "stream '$x' must not start with '$'"),
            (["login", "-s", ""], "stream must not be empty"),
            (["$t", "-s", "a"], "type '$t' must not start with '$'"),
            (["login", "-s", "a", "-d", "[1]"], "--data must be a JSON object, not an array"),
            (["login", "-s", "a", "-d", "{nope"], "--data is not valid JSON"),
            (["login", "-s", "a", "--meta", "3"], "--meta must be a JSON object, not a number"),
            (["login", "-s", "a", "--id", "$id"], "id '$id' must not start with '$'"),
            (["login", "-s", "a", "--expected-version", "-1"], "greater than or equal to 0"),
            (["login", "-s", "a", "--expected-version", "one"], "valid integer"),
            (["login", "-s", "a", "--file", "x"], "--file takes events from the file"),
            (["login", "-s", "a", "--nope"], "No such option: --nope"),
        ],
    )
    def test_bad_input_is_one_line_and_exit_2(
        self, cli: Any, db: Any, args: list[str], message: str
    ) -> None:
        r = cli("publish", *args)
        assert r.exit_code == 2
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], r.stderr
        assert db.events.count_documents({}) == 0


class TestFile:
    def test_bulk_versions_in_line_order_and_summary(
        self, cli: Any, db: Any, tmp_path: Path
    ) -> None:
        rows = [{"type": "login", "stream": f"s{i % 7}", "data": {"n": i}} for i in range(2500)]
        path = tmp_path / "events.ndjson"
        path.write_text(ndjson(rows))
        r = cli("publish", "--file", str(path), "-o", "json")
        assert r.exit_code == 0, r.stderr
        summary = json.loads(r.stdout)
        assert (summary["published"], summary["duplicates"], summary["skipped"]) == (2500, 0, 0)
        for s in range(7):
            docs = stored(db, f"s{s}")
            assert [d["version"] for d in docs] == list(range(1, len(docs) + 1))
            assert [d["data"]["n"] for d in docs] == sorted(d["data"]["n"] for d in docs)

    def test_republishing_the_same_ids_stores_nothing_twice(
        self, cli: Any, db: Any, tmp_path: Path
    ) -> None:
        path = tmp_path / "e.ndjson"
        path.write_text(ndjson([{"type": "t", "stream": "a", "id": f"e{i}"} for i in range(30)]))
        assert json.loads(cli("publish", "-f", str(path)).stdout)["published"] == 30
        again = json.loads(cli("publish", "-f", str(path)).stdout)
        assert (again["published"], again["duplicates"]) == (0, 30)
        assert db.events.count_documents({}) == 30

    def test_a_bad_line_in_a_file_writes_nothing(self, cli: Any, db: Any, tmp_path: Path) -> None:
        lines = (
            [{"type": "t", "stream": "a"}] * 5
            + ['{"type": "t"}']
            + [{"type": "t", "stream": "b"}]
            + ["[1]"]
        )
        path = tmp_path / "e.ndjson"
        path.write_text(ndjson(lines))
        r = cli("publish", "-f", str(path))
        assert r.exit_code == 2
        assert (
            "error: line 6: missing field 'stream' (and 1 more invalid line(s)); nothing was written"
            in r.stderr
        )
        assert db.events.count_documents({}) == 0

    def test_skip_invalid_writes_the_good_lines_and_reports_each_bad_one(
        self, cli: Any, db: Any, tmp_path: Path
    ) -> None:
        path = tmp_path / "e.ndjson"
        path.write_text(
            ndjson([{"type": "t", "stream": "a"}, "{oops", {"type": "t", "stream": "a"}, "7"])
        )
        r = cli("publish", "-f", str(path), "--skip-invalid", "-o", "json")
        assert r.exit_code == 0
        assert "skipped line 2: not valid JSON" in r.stderr
        assert "skipped line 4: expected a JSON object, got a number" in r.stderr
        assert json.loads(r.stdout)["skipped"] == 2
        assert [d["version"] for d in stored(db, "a")] == [1, 2]

    def test_stdin_reports_exactly_what_was_written_before_a_bad_line(
        self, cli: Any, db: Any
    ) -> None:
        good = [{"type": "t", "stream": f"s{i % 3}"} for i in range(1500)]
        r = cli(
            "publish",
            "--file",
            "-",
            "--batch-size",
            "1000",
            input=ndjson([*good, '{"stream": 1}', *good]),
        )
        assert r.exit_code == 2
        assert "line 1501: missing field 'type'; 1500 event(s) before it were stored" in r.stderr
        assert db.events.count_documents({}) == 1500

    def test_expected_versions_in_a_file(self, cli: Any, db: Any, tmp_path: Path) -> None:
        rows = [
            {"type": "t", "stream": "a", "expected_version": 0},
            {"type": "t", "stream": "a", "expected_version": 1},
            {"type": "t", "stream": "a", "expected_version": 1},
        ]
        r = cli("publish", "-f", "-", input=ndjson(rows))
        assert r.exit_code == 5
        assert (
            "line 3: stream 'a' is at version 2, not the expected version 1; 2 event(s) before it were stored"
            in r.stderr
        )
        assert db.events.count_documents({}) == 2

    def test_bom_crlf_and_blank_lines(self, cli: Any, db: Any) -> None:
        data = b'\xef\xbb\xbf{"type": "t", "stream": "a"}\r\n\r\n{"type": "t", "stream": "a"}\r\n'
        r = cli("publish", "-f", "-", "-o", "json", input=data)
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["published"] == 2

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"\x00\x01\x02\xff\xfe", "line 1: binary data"),
            (b'{"type": "t", "stream": "\xff"}\n', "line 1: not UTF-8 text"),
            (b'{"type": "t", "stream": "a"} trailing\n', "line 1: not valid JSON"),
        ],
    )
    def test_binary_or_broken_input_exits_2(
        self, cli: Any, db: Any, data: bytes, message: str
    ) -> None:
        r = cli("publish", "-f", "-", input=data)
        assert r.exit_code == 2 and message in r.stderr
        assert db.events.count_documents({}) == 0

    def test_empty_input_says_so(self, cli: Any, db: Any) -> None:
        r = cli("publish", "-f", "-", "-o", "json", input=b"")
        assert r.exit_code == 0
        assert "the input had no events" in r.stderr
        assert json.loads(r.stdout)["published"] == 0

    def test_an_event_over_16_mb_is_refused_up_front(
        self, cli: Any, db: Any, tmp_path: Path
    ) -> None:
        path = tmp_path / "big.ndjson"
        big = {"type": "t", "stream": "a", "data": {"blob": "x" * (16 * 1024 * 1024)}}
        path.write_text(ndjson([{"type": "t", "stream": "a"}, big]))
        r = cli("publish", "-f", str(path))
        assert r.exit_code == 2
        assert "line 2: event is 16.0 MB; MongoDB stores documents up to 16 MB" in r.stderr
        assert db.events.count_documents({}) == 0

    def test_missing_file(self, cli: Any, db: Any, tmp_path: Path) -> None:
        r = cli("publish", "-f", str(tmp_path / "nope.ndjson"))
        assert r.exit_code == 2 and "no such file" in r.stderr


class TestConnecting:
    def test_unreachable_server_exits_3_quickly_without_the_password(self, cli: Any) -> None:
        started = time.monotonic()
        r = cli(
            "--uri",
            "mongodb://user:s3cr3tpw@127.0.0.1:9/?serverSelectionTimeoutMS=300",
            "publish",
            "t",
            "-s",
            "a",
        )
        assert r.exit_code == 3
        assert time.monotonic() - started < 10
        assert "cannot reach mongodb://user:****@127.0.0.1:9/" in r.stderr
        assert "s3cr3tpw" not in r.stdout + r.stderr

    @pytest.mark.parametrize(
        "uri",
        [
            "mongodb://user:s3cr3tpw@",
            "http://localhost",
            "mongodb://a:s3cr3tpw@h/?tls=maybe",
            "mongodb://a:s3cr3tpw@h:99999/",
        ],
    )
    def test_invalid_uri_exits_2_without_the_password(self, cli: Any, uri: str) -> None:
        r = cli("--uri", uri, "publish", "t", "-s", "a")
        assert r.exit_code == 2, r.stderr
        assert "s3cr3tpw" not in r.stdout + r.stderr
        assert r.stderr.count("error:") == 1

    def test_invalid_database_name_exits_2(self, cli: Any) -> None:
        r = cli("--db", "bad/name", "publish", "t", "-s", "a")
        assert r.exit_code == 2 and "invalid database name" in r.stderr
