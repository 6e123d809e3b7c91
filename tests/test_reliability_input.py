"""Bad input through the real CLI, for every command: exactly one `error:` line on stderr, the
documented exit code, no traceback, nothing on stdout and nothing written (the database is
compared before and after).

What tests/test_bad_input.py and tests/test_publish.py already try (bad NDJSON lines, the first
bad --data/--meta values, unreachable and invalid URIs for publish) is not repeated here. Each
group runs all its inputs and reports every failing one at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from evstream.embedded import free_port

# label, argv, exit code, and the text (or each of several texts) the error line must hold
Case = tuple[str, list[str], int, "str | tuple[str, ...]"]

# Safety nets: if a bad value were accepted, these make the command end by itself.
ENDS = ["--idle-timeout", "0.2"]
ENDS_AFTER_ONE = ["--from", "start", "--limit", "1"]


def snapshot(db: Any) -> dict[str, list[dict[str, Any]]]:
    """Every document of every collection of the test's database."""
    return {
        name: sorted(db[name].find(), key=lambda d: repr(d["_id"]))
        for name in sorted(db.list_collection_names())
    }


@pytest.fixture
def seeded(cli: Any, db: Any) -> dict[str, list[dict[str, Any]]]:
    """A database holding events, sessions, a projection checkpoint and a watch checkpoint."""
    assert cli("seed").exit_code == 0
    assert cli("rebuild-sessions").exit_code == 0
    r = cli("watch", "-c", "mailer", "--from", "start", "--limit", "2", "-o", "json")
    assert r.exit_code == 0, r.stderr
    before = snapshot(db)
    assert {"events", "sessions", "evstream_checkpoints"} <= set(before)
    return before


def run_cases(
    cli: Any,
    db: Any,
    before: dict[str, Any] | None,
    group: str,
    cases: Iterable[Case],
    stdin: str | bytes | None = None,
    secret: str | None = None,
) -> None:
    """Run each case; fail with the list of every case that broke a rule (or showed `secret`)."""
    problems = []
    count = 0
    for label, argv, code, text in cases:
        count += 1
        r = cli(*argv, input=stdin)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        why = []
        if r.exit_code != code:
            why.append(f"exit {r.exit_code}, not {code}")
        if len(errors) != 1:
            why.append(f"{len(errors)} error lines")
        elif not all(t in errors[0] for t in ((text,) if isinstance(text, str) else text)):
            why.append(f"{text!r} not in the error line")
        if "Traceback" in r.stderr + r.stdout:
            why.append("a traceback")
        if r.stdout.strip():
            why.append(f"stdout: {r.stdout[:100]!r}")
        if secret and secret in r.stdout + r.stderr:
            why.append("the URI's password was shown")
        if before is not None and snapshot(db) != before:
            why.append("the database changed")
            before = snapshot(db)
        if why:
            problems.append(f"{label}: {'; '.join(why)}; stderr: {r.stderr.strip()[-300:]!r}")
    print(f"{group}: {count} bad inputs tried")
    assert not problems, "\n".join(problems)


# --- unknown options, extra arguments, missing values: every command -------------------------------

COMMANDS = [
    ["publish"],
    ["watch"],
    ["seed"],
    ["rebuild-sessions"],
    ["status"],
    ["bench"],
    ["server", "start"],
    ["server", "stop"],
    ["server", "status"],
    ["server", "logs"],
]


def usage_cases() -> list[Case]:
    cases: list[Case] = []
    for cmd in COMMANDS:
        name = " ".join(cmd)
        cases += [
            (f"{name} --nope", [*cmd, "--nope"], 2, "No such option: --nope"),
            (f"{name} -Z", [*cmd, "-Z"], 2, "No such option: -Z"),
            (f"{name} --nope=1", [*cmd, "--nope=1"], 2, "No such option: --nope"),
            (f"--nope {name}", ["--nope", *cmd], 2, "No such option: --nope"),
            (f"{name} --db (no value)", [*cmd, "--db"], 2, "--db"),
        ]
    cases += [
        ("server --nope", ["server", "--nope"], 2, "No such option: --nope"),
        ("server nope", ["server", "nope"], 2, "No such command 'nope'"),
        ("nope", ["nope"], 2, "No such command 'nope'"),
        ("status extra", ["status", "extra"], 2, "unexpected extra argument"),
        ("seed extra", ["seed", "extra"], 2, "unexpected extra argument"),
        ("rebuild extra", ["rebuild-sessions", "extra"], 2, "unexpected extra argument"),
        ("server stop extra", ["server", "stop", "extra"], 2, "unexpected extra argument"),
        ("server logs extra", ["server", "logs", "extra"], 2, "unexpected extra argument"),
        ("bench two workloads", ["bench", "publish", "rebuild"], 2, "unexpected extra argument"),
        ("bench unknown workload", ["bench", "nope"], 2, "'nope' is not one of 'publish'"),
        ("watch two collections", ["watch", "events", "more", *ENDS], 2, "unexpected extra"),
        ("publish two types", ["publish", "t", "u", "-s", "a"], 2, "unexpected extra argument"),
        ("publish -s (no value)", ["publish", "t", "-s"], 2, "requires an argument"),
        ("watch --limit (no value)", ["watch", "--limit"], 2, "requires an argument"),
        ("seed --users (no value)", ["seed", "--users"], 2, "requires an argument"),
        ("status --estimate=yes", ["status", "--estimate=yes"], 2, "does not take a value"),
        ("--output bogus", ["--output", "bogus", "status"], 2, "'bogus' is not one of 'auto'"),
        ("-o bogus after", ["status", "-o", "bogus"], 2, "'bogus' is not one of 'auto'"),
    ]
    return cases


def test_unknown_options_extra_arguments_and_missing_values(cli: Any, db: Any, seeded: Any) -> None:
    run_cases(cli, db, seeded, "usage", usage_cases())


# --- numbers: negative, zero, non-integer, not a number ----------------------------------------------


def number_cases() -> list[Case]:
    cases: list[Case] = []

    def bad(cmd: list[str], option: str, values: list[str], text: str, *rest: str) -> None:
        for value in values:
            label = f"{' '.join(cmd)} {option} {value!r}"
            cases.append((label, [*cmd, option, value, *rest], 2, (f"'{option}'", text)))

    not_int = "valid integer"
    bad(["watch"], "--limit", ["-1", "0"], "greater than or equal to 1", *ENDS)
    bad(["watch"], "--limit", ["x", "1.5", "", "1e3", "0x10"], not_int, *ENDS)
    bad(["watch"], "--idle-timeout", ["-1", "-0.5", "-inf", "nan"], "", *ENDS_AFTER_ONE)
    bad(["watch"], "--idle-timeout", ["x", "", "1s"], "", *ENDS_AFTER_ONE)
    bad(["bench"], "--events", ["-1", "0", "99"], "greater than or equal to 100")
    bad(["bench"], "--events", ["x", "1.5", "1e5", ""], not_int)
    bad(["bench"], "--streams", ["0", "-3"], "greater than or equal to 1")
    bad(["bench"], "--streams", ["x", "2.5"], not_int)
    bad(["bench"], "--rounds", ["0", "-1"], "greater than or equal to 1")
    bad(["bench"], "--rounds", ["many"], not_int)
    bad(["seed"], "--users", ["0", "-1"], "greater than or equal to 1")
    bad(["seed"], "--users", ["x", "1.5", ""], not_int)
    bad(["seed", "--users", "2"], "--events-per-user", ["0", "-3"], "greater than or equal to 1")
    bad(["seed", "--users", "2"], "--events-per-user", ["ten"], not_int)
    bad(["seed", "--users", "2"], "--random-seed", ["x", "1.5"], not_int)
    bad(["server", "logs"], "-n", ["-1"], "greater than or equal to 0")
    bad(["server", "logs"], "-n", ["x", "2.5"], not_int)
    bad(["rebuild-sessions"], "--margin", ["-1", "-0.001"], "greater than or equal to 0")
    bad(["rebuild-sessions"], "--margin", ["604801", "inf", "nan", "1e400"], "less than or equal")
    bad(["rebuild-sessions"], "--margin", ["x", ""], "valid number")
    bad(["publish", "t", "-s", "a"], "--expected-version", ["1.5", "", "0x1"], not_int)
    return cases


def test_bad_numbers(cli: Any, db: Any, seeded: Any) -> None:
    run_cases(cli, db, seeded, "numbers", number_cases())


# --- watch --from -------------------------------------------------------------------------------------

BAD_FROM = [
    "yesterday",
    "now-1h",
    "",
    " ",
    "2024-13-01",
    "2024-02-30",
    "2024-05-01T25:00",
    "2024-05-01T10:00:00+25:00",
    "2024-05-01T10:00:00ZZ",
    "99999-01-01",
    "1714557600",
    "NaN",
    "T10:00",
    "--",
    "0001-01-01T00:00:00+14:00",  # a valid time whose UTC value is before year 1
    "9999-12-31T23:59:59-14:00",  # … or after year 9999
    "0001-01-01",  # midnight local time, before year 1 in UTC east of Greenwich
]


def test_bad_from_times(cli: Any, db: Any, seeded: Any) -> None:
    cases = [(f"--from {v!r}", ["watch", "--from", v, *ENDS], 2, "--from") for v in BAD_FROM]
    cases += [
        (f"--from {v!r} -c", ["watch", "-c", "new", "--from", v, *ENDS], 2, "--from")
        for v in BAD_FROM[:3]
    ]
    run_cases(cli, db, seeded, "--from", cases)


def test_a_from_time_at_the_edge_of_the_calendar_works(cli: Any, seeded: Any) -> None:
    r = cli("watch", "--from", "0001-01-01T00:00:00Z", "--idle-timeout", "0.3", "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(seeded["events"])
    r = cli("watch", "--from", "9999-12-31T23:59:59Z", "--idle-timeout", "0.3", "-o", "json")
    assert r.exit_code == 0 and r.stdout == "", r.stderr


# --- --data and --meta (publish is the command that takes them), and names -------------------------


def deep(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


OBJECT_SHAPES = {"empty", "blank", "null", "number", "boolean", "string", "array of objects"}
BAD_OBJECTS = [
    ("empty", "", "not valid JSON"),
    ("blank", "   ", "not valid JSON"),
    ("null", "null", "must be a JSON object, not null"),
    ("number", "5", "must be a JSON object, not a number"),
    ("boolean", "true", "must be a JSON object, not a boolean"),
    ("string", '"x"', "must be a JSON object, not a string"),
    ("array of objects", '[{"a": 1}]', "must be a JSON object, not an array"),
    ("trailing text", '{"a": 1} x', "not valid JSON"),
    ("two objects", '{"a": 1}{"b": 2}', "not valid JSON"),
    ("single quotes", "{'a': 1}", "not valid JSON"),
    ("unquoted key", "{a: 1}", "not valid JSON"),
    ("trailing comma", '{"a": 1,}', "not valid JSON"),
    ("nested $ key", '{"a": {"$gt": 1}}', "starting with '$'"),
    ("$ key in a list", '{"a": [{"$where": "1"}]}', "starting with '$'"),
    ("NUL key", '{"a\\u0000b": 1}', "NUL character"),
    ("nested 150 deep", deep(150), "nested more than 100 levels deep"),
    ("nested 50,000 deep", deep(50_000), "not valid JSON"),
    ("arrays 50,000 deep", '{"a": ' + "[" * 50_000 + "]" * 50_000 + "}", "not valid JSON"),
    ("bad $oid", '{"a": {"$oid": "zz"}}', "not valid JSON"),
    ("bad $date", '{"a": {"$date": "not-a-date"}}', "not valid JSON"),
    ("$date of a list", '{"a": {"$date": [1]}}', "not valid JSON"),
    ("$date too far", '{"a": {"$date": {"$numberLong": "999999999999999999"}}}', "not valid JSON"),
    ("bad $numberLong", '{"a": {"$numberLong": "x"}}', "not valid JSON"),
    ("bad $numberDecimal", '{"a": {"$numberDecimal": "x"}}', "not valid JSON"),
    ("bad $timestamp", '{"a": {"$timestamp": {"t": "x", "i": 1}}}', "not valid JSON"),
    ("bad $minKey", '{"a": {"$minKey": 2}}', "not valid JSON"),
    ("bad $uuid", '{"a": {"$uuid": "zz"}}', "not valid JSON"),
    ("bad $binary subType", '{"a": {"$binary": {"base64": "AA==", "subType": "zz"}}}', "not valid"),
    ("integer over 8 bytes", '{"a": 99999999999999999999999}', "8-byte"),
    ("negative integer over 8 bytes", '{"a": [-9223372036854775809]}', "8-byte"),
    ("$numberLong over 8 bytes", '{"a": {"$numberLong": "99999999999999999999"}}', "8-byte"),
]


def test_invalid_data_and_meta(cli: Any, db: Any, seeded: Any) -> None:
    cases: list[Case] = []
    for option in ("--data", "-d", "--meta"):
        kind = "--meta" if option == "--meta" else "--data"
        for label, value, text in BAD_OBJECTS:
            argv = ["publish", "login", "-s", "alice", option, value]
            cases.append((f"{option} {label}", argv, 2, (kind, text)))
    big = json.dumps({"blob": "x" * (16 * 1024 * 1024)})
    cases.append(("--data over 16 MB", ["publish", "t", "-s", "a", "-d", big], 2, "16 MB"))
    run_cases(cli, db, seeded, "--data/--meta", cases)


BAD_NAMES = [
    ("empty", "", "must not be empty"),
    ("blank", "   ", "must not be empty"),
    ("257 characters", "n" * 257, "the limit is 256"),
    ("huge", "n" * 100_000, "the limit is 256"),
    ("$-prefixed", "$n", "must not start with '$'"),
    ("NUL", "a\x00b", "NUL character"),
    ("newline", "a\nb", "control characters"),
    ("escape", "a\x1b[31mb", "control characters"),
]


def test_invalid_names_on_the_command_line(cli: Any, db: Any, seeded: Any) -> None:
    cases: list[Case] = []
    for label, value, text in BAD_NAMES:
        cases.append((f"TYPE {label}", ["publish", value, "-s", "a"], 2, ("type", text)))
        cases.append((f"--stream {label}", ["publish", "t", "-s", value], 2, ("stream", text)))
        argv = ["publish", "t", "-s", "a", "--id", value]
        cases.append((f"--id {label}", argv, 2, ("id", text)))
    run_cases(cli, db, seeded, "names", cases)


# What tests/test_bad_input.py does not already try inside an NDJSON line.
IN_A_LINE = [case for case in BAD_OBJECTS if case[0] not in OBJECT_SHAPES]


def test_malformed_extended_json_in_a_file_writes_nothing(
    cli: Any, db: Any, seeded: Any, tmp_path: Any
) -> None:
    good = json.dumps({"type": "t", "stream": "bulk"}) + "\n"
    cases = []
    for i, (label, value, text) in enumerate(IN_A_LINE):
        line = '{"type": "t", "stream": "bulk", "data": ' + value + "}\n"
        path = tmp_path / f"in{i}.ndjson"
        path.write_text(good * 2500 + line + good)  # past the first batches
        argv = ["publish", "--file", str(path)]
        cases.append((f"file: {label}", argv, 2, ("line 2501: ", text, "nothing was written")))
    run_cases(cli, db, seeded, "file", cases)


def test_skip_invalid_skips_malformed_extended_json(cli: Any, db: Any) -> None:
    lines = ['{"type": "t", "stream": "a"}']
    lines += ['{"type": "t", "stream": "a", "data": ' + v + "}" for _, v, _ in IN_A_LINE]
    lines += ['{"type": "t", "stream": "a"}']
    r = cli("publish", "--file", "-", "--skip-invalid", "-o", "json", input="\n".join(lines))
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] == len(lines) - 2
    assert r.stderr.count("skipped line") == len(lines) - 2
    assert db.events.count_documents({}) == 2


# --- invalid URIs, unreachable servers, invalid database names: every command that connects -------

CONNECTING = [
    ["publish", "login", "-s", "alice"],
    ["publish", "--file", "-"],
    ["watch", *ENDS],
    ["watch", "sessions", *ENDS],
    ["watch", "-c", "mailer", *ENDS],
    ["seed"],
    ["seed", "--users", "3"],
    ["rebuild-sessions"],
    ["rebuild-sessions", "--incremental"],
    ["rebuild-sessions", "--dry-run"],
    ["status"],
    ["status", "--estimate"],
    ["bench", "publish", "--events", "100"],
]

PASSWORD = "s3cr3t-Pw"
INVALID_URIS = [
    f"mongodb://user:{PASSWORD}@",
    "http://localhost:27017",
    "localhost:27017",
    f"mongodb://u:{PASSWORD}@h/?tls=maybe",
    f"mongodb://u:{PASSWORD}@h:99999/",
    f"mongodb://u:{PASSWORD}@h/?unknownOption=1",
    f"mongodb://u:{PASSWORD}@h/?serverSelectionTimeoutMS=-5",
    f"mongodb://u:{PASSWORD}@[::1",
    f"mongodb://u:{PASSWORD}@h/?authMechanism=BOGUS",
    f"mongodb://u:{PASSWORD}@h/?authMechanism=MONGODB-X509",
    f"mongodb://u:{PASSWORD}@h/?authSource=",
    "mongodb://u:unescaped@at@h/",
    "mongodb://%zz:pw@h/",
    f"mongodb+srv://u:{PASSWORD}@h:27017/",
]


def test_invalid_uris_for_every_command(cli: Any, db: Any) -> None:
    cases = [
        (f"{' '.join(cmd)} --uri {uri}", ["--uri", uri, *cmd], 2, "invalid MongoDB URI")
        for uri in INVALID_URIS
        for cmd in CONNECTING
    ]
    stdin = '{"type": "t", "stream": "a"}\n'
    run_cases(cli, db, None, "invalid URIs", cases, stdin=stdin, secret=PASSWORD)
    assert db.list_collection_names() == []


def unreachable(port: int) -> str:
    return f"mongodb://user:{PASSWORD}@127.0.0.1:{port}/?serverSelectionTimeoutMS=200"


def test_unreachable_servers_for_every_command(cli: Any, db: Any) -> None:
    uri = unreachable(free_port())
    cases = [(f"{' '.join(cmd)}", ["--uri", uri, *cmd], 3, "cannot reach") for cmd in CONNECTING]
    stdin = '{"type": "t", "stream": "a"}\n'
    run_cases(cli, db, None, "unreachable", cases, stdin=stdin, secret=PASSWORD)
    # The same through the environment variables, and on a port where nothing listens.
    for variable in ("EVSTREAM_URI", "MONGODB_URI"):
        r = cli("status", input=None, **{"EVSTREAM_URI": "", variable: uri})
        assert r.exit_code == 3 and r.stderr.count("error:") == 1, r.stderr
    assert db.list_collection_names() == []


BAD_DB_NAMES = ["bad/name", "", "a b", "x" * 64, "$x", "a.b", 'q"', "nul\x00"]


def test_invalid_database_names_for_every_command(cli: Any, db: Any) -> None:
    cases = [
        (f"--db {name!r} {' '.join(cmd)}", ["--db", name, *cmd], 2, "invalid database name")
        for name in BAD_DB_NAMES
        for cmd in CONNECTING
        if cmd[0] != "bench"  # bench works in scratch databases of its own, whatever --db says
    ]
    run_cases(cli, db, None, "database names", cases, stdin='{"type": "t", "stream": "a"}\n')
    assert db.list_collection_names() == []
