"""Secrets: none stored in clear by publish (one event, a file, stdin) or seed; none printed by
watch (pretty and JSON, the log and other collections) unless --show-secrets; and no URI password
in any output or error of any command, whether the server is unreachable or refuses the
credentials.

nx-27017 has no authentication. Given a user name and password, pymongo starts SCRAM; nx-27017
answers saslStart like any command it does not know, {ok: 1} without a payload, and pymongo's
SCRAM code fails on that with KeyError('payload'). evstream reports it as an authentication
failure (exit 3), as it does MongoDB's own refusal (code 18, AuthenticationFailed); the translation
of MongoDB's codes is unit-tested in tests/test_settings.py. Against a real deployment
(EVSTREAM_TEST_URI) the fake credentials below are refused by the server itself: exit 3 as well.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from bson import json_util

from evstream.embedded import free_port

# Secret values are unique strings, so that finding one anywhere means it leaked.
SECRET_DATA = {
    "username": "alice",
    "password": "S3CRET-pw-1",
    "Password": "S3CRET-pw-2",
    "api_key": "S3CRET-key-3",
    "apiKey": "S3CRET-key-4",
    "X-Auth-Token": "S3CRET-tok-5",
    "nested": {"client_secret": "S3CRET-cs-6", "keep": "visible-1", "list": [{"pwd": "S3CRET-7"}]},
    "credentials": {"user": "u", "pass": "S3CRET-8"},
    "access_token": ["S3CRET-9a", "S3CRET-9b"],
    "pin": 918273,
}
SECRET_META = {
    "source": "test",
    "headers": {"Authorization": "Bearer S3CRET-10", "Cookie": "sid=S3CRET-11"},
    "refreshToken": "S3CRET-12",
    "private_key": "S3CRET-13",
}
SECRETS = [
    "S3CRET-pw-1",
    "S3CRET-pw-2",
    "S3CRET-key-3",
    "S3CRET-key-4",
    "S3CRET-tok-5",
    "S3CRET-cs-6",
    "S3CRET-7",
    "S3CRET-8",
    "S3CRET-9a",
    "S3CRET-9b",
    "918273",
    "S3CRET-10",
    "S3CRET-11",
    "S3CRET-12",
    "S3CRET-13",
]
# The field names the README calls secret-looking, and the usual spellings of them.
SECRET_WORDS = ("password", "passwd", "secret", "token", "apikey", "authorization", "credential")


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def dump(db: Any) -> str:
    """Everything stored in the test's database, as text."""
    return "\n".join(
        json_util.dumps(doc) for name in db.list_collection_names() for doc in db[name].find()
    )


def secret_looking_fields(value: Any, path: str = "") -> list[str]:
    """Fields whose names look like secrets and whose values are not a redaction marker."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            norm = "".join(c for c in str(key).lower() if c.isalnum())
            if any(w in norm for w in SECRET_WORDS) and item not in (None, "", "[redacted]"):
                found.append(f"{path}.{key}")
            found += secret_looking_fields(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += secret_looking_fields(item, f"{path}[{i}]")
    return found


def event(n: int) -> dict[str, Any]:
    return {"type": "login", "stream": f"s{n % 3}", "data": SECRET_DATA, "meta": SECRET_META}


# --- nothing stored in clear ---------------------------------------------------------------------


def test_publish_one_event_stores_no_secret_in_clear(cli: Any, db: Any) -> None:
    data, meta = json.dumps(SECRET_DATA), json.dumps(SECRET_META)
    for output in ("json", "pretty"):
        r = cli("publish", "login", "-s", "alice", "-d", data, "--meta", meta, "-o", output)
        assert r.exit_code == 0, r.stderr
        assert leaked(r.stdout + r.stderr) == []
        assert "redacted data.password" in r.stderr and "meta.headers.Authorization" in r.stderr
    assert db.events.count_documents({}) == 2
    assert leaked(dump(db)) == []
    stored = db.events.find_one()
    assert stored["data"]["nested"]["keep"] == "visible-1"  # only the secrets go
    assert stored["data"]["username"] == "alice" and stored["meta"]["source"] == "test"


def test_bulk_publish_stores_no_secret_in_clear(cli: Any, db: Any, tmp_path: Any) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text("".join(json.dumps(event(n)) + "\n" for n in range(30)))
    r = cli("publish", "--file", str(path), "-o", "json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["published"] == 30
    stdin = cli("publish", "--file", "-", "-o", "json", input=path.read_text())
    assert stdin.exit_code == 0, stdin.stderr
    assert "redacted" in r.stderr and "redacted" in stdin.stderr
    assert leaked(r.stdout + r.stderr + stdin.stdout + stdin.stderr) == []
    assert db.events.count_documents({}) == 60
    assert leaked(dump(db)) == []
    for doc in db.events.find():
        assert secret_looking_fields(doc) == [], doc


def test_seed_stores_no_secret_looking_value(cli: Any, db: Any) -> None:
    assert cli("seed").exit_code == 0
    assert cli("seed", "--users", "40", "--events-per-user", "8").exit_code == 0
    assert cli("rebuild-sessions").exit_code == 0
    assert db.events.count_documents({}) > 300
    for name in db.list_collection_names():
        for doc in db[name].find():
            assert secret_looking_fields(doc) == [], (name, doc)


# --- nothing printed by watch unless asked -------------------------------------------------------


def run(cli: Any, *args: str) -> Any:
    result = cli(*args, COLUMNS="500")
    assert result.exit_code == 0, result.stderr
    return result


@pytest.mark.parametrize("output", ["json", "pretty"])
def test_watch_masks_secrets_unless_show_secrets(cli: Any, db: Any, output: str) -> None:
    # Stored in clear on purpose (--keep-secrets), as an application writing directly might.
    lines = "".join(json.dumps(event(n)) + "\n" for n in range(3))
    assert cli("publish", "--file", "-", "--keep-secrets", input=lines).exit_code == 0
    db.sessions.insert_one({"_id": "alice", "status": "active", "token": "S3CRET-tok-5"})
    log = ["watch", "--from", "start", "--idle-timeout", "0.5", "-o", output]
    other = ["watch", "sessions", "--from", "start", "--idle-timeout", "0.5", "-o", output]

    for args in (log, other):
        hidden = run(cli, *args)
        assert hidden.stdout.count("\n") >= (3 if args is log else 1)
        assert leaked(hidden.stdout + hidden.stderr) == [], args
        assert "****" in hidden.stdout

    shown = run(cli, *log, "--show-secrets").stdout
    # JSON lines show the whole event; pretty lines the start of its data, cut at 100 characters.
    expected = SECRETS if output == "json" else SECRETS[:1]
    assert [s for s in expected if s not in shown] == []
    assert "S3CRET-tok-5" in run(cli, *other, "--show-secrets").stdout


# --- no URI password anywhere ------------------------------------------------------------------

PASSWORD = "p%40ss%3Aw0rd-Zq"  # percent-encoded in the URI: p@ss:w0rd-Zq
FORMS = (PASSWORD, "p@ss:w0rd-Zq", "w0rd-Zq")
EVERY_COMMAND = [
    ["publish", "login", "-s", "alice"],
    ["publish", "--file", "-"],
    ["watch", "--idle-timeout", "0.3"],
    ["watch", "sessions", "--idle-timeout", "0.3"],
    ["watch", "-c", "cp", "--from", "start", "--idle-timeout", "0.3"],
    ["seed"],
    ["seed", "--users", "3"],
    ["rebuild-sessions"],
    ["rebuild-sessions", "--incremental", "--dry-run"],
    ["status"],
    ["status", "--estimate"],
    ["bench", "publish", "--events", "100"],
]
NOT_CONNECTING = [["server", "status"], ["server", "logs"], ["server", "stop"], ["--version"]]


def password_free(result: Any, label: str) -> None:
    text = result.stdout + result.stderr
    assert not [form for form in FORMS if form in text], f"{label}: {text[-500:]}"


def test_no_password_when_the_server_is_unreachable(cli: Any) -> None:
    uri = f"mongodb://app:{PASSWORD}@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200"
    # Every command: tests/test_reliability_input.py (a plain password); here the encoded one.
    for argv in EVERY_COMMAND[::3]:
        r = cli("--uri", uri, *argv, input='{"type": "t", "stream": "a"}\n')
        password_free(r, " ".join(argv))
        assert r.exit_code == 3, (argv, r.stderr)
        assert r.stderr.count("error:") == 1 and "cannot reach" in r.stderr, r.stderr
        assert "app:****@127.0.0.1" in r.stderr
    for argv in NOT_CONNECTING:
        password_free(cli("--uri", uri, *argv), " ".join(argv))
    for variable in ("EVSTREAM_URI", "MONGODB_URI"):
        r = cli("status", **{"EVSTREAM_URI": "", variable: uri})
        assert r.exit_code == 3
        password_free(r, variable)
    debug_runs_are_password_free(
        cli, [["--uri", uri, "--debug", *argv] for argv in EVERY_COMMAND if argv[0] != "seed"]
    )


def test_no_password_in_invalid_uri_errors(cli: Any) -> None:
    uris = [
        f"mongodb://app:{PASSWORD}@",
        f"mongodb://app:{PASSWORD}@h:99999/",
        f"mongodb://app:{PASSWORD}@h/?tls=maybe",
        f"mongodb://app:{PASSWORD}@h/?authMechanism=MONGODB-X509",
        f"mongodb://app:{PASSWORD}@h/?retryWrites=perhaps",
        f"mongodb://app:{PASSWORD}@h/?w=0&journal=true",
        f"mongodb+srv://app:{PASSWORD}@h:1/",
    ]
    for uri in uris:
        for argv in EVERY_COMMAND:
            r = cli("--uri", uri, *argv, input='{"type": "t", "stream": "a"}\n')
            password_free(r, f"{uri} {argv}")
            assert r.exit_code == 2 and r.stderr.count("error:") == 1, r.stderr
    debug_runs_are_password_free(cli, [["--uri", uri, "--debug", "status"] for uri in uris])


def debug_runs_are_password_free(cli: Any, argvs: list[list[str]]) -> None:
    """--debug prints tracebacks: still without the password (real processes, all at once)."""
    procs = [cli.popen(*argv, stdin=subprocess.DEVNULL) for argv in argvs]
    for argv, proc in zip(argvs, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode != 0 and "Traceback" in err, (argv, err[-300:])
        password_free(subprocess.CompletedProcess(argv, proc.returncode, out, err), str(argv))


def with_credentials(uri: str, user: str, password: str) -> str:
    scheme, rest = uri.split("://", 1)
    hosts, slash, tail = rest.partition("/")
    return f"{scheme}://{user}:{password}@{hosts.rpartition('@')[2]}{slash}{tail}"


def test_credentials_the_server_refuses(cli: Any, db: Any) -> None:
    """A reachable server and a user name and password it does not accept: exit 3, no password."""
    uri = with_credentials(cli.uri, "nobody", PASSWORD)
    # Every command: tests/test_reliability_input.py (a plain password); here the encoded one.
    for argv in EVERY_COMMAND[::3]:
        r = cli("--uri", uri, *argv, input='{"type": "t", "stream": "a"}\n')
        password_free(r, " ".join(argv))
        assert r.exit_code == 3, (argv, r.stderr)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "authentication failed" in errors[0], r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
    assert db.list_collection_names() == []
