"""docs/python-api.md: every call of the client is documented, and every example on the page
runs, in order, against a test server (through EVSTREAM_URI and EVSTREAM_DB, as a user's
environment would point `evstream.connect()` at it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from evstream.client import Client

PAGE = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def examples() -> list[tuple[int, str]]:
    text = PAGE.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_every_public_call_is_documented() -> None:
    text = PAGE.read_text()
    calls = [name for name, value in vars(Client).items() if callable(value) and name[0] != "_"]
    missing = [name for name in calls if not re.search(rf"`{name}\(|^## .*\b{name}\b", text, re.M)]
    properties = [name for name, value in vars(Client).items() if isinstance(value, property)]
    missing += [name for name in properties if f"`client.{name}`" not in text]
    assert not missing, f"not documented in {PAGE.name}: {missing}"
    assert "evstream.connect(uri=None, db=None, *, context=None)" in text


def test_the_examples_run(
    server_uri: str, db_name: str, db: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("EVSTREAM_URI", server_uri)
    monkeypatch.setenv("EVSTREAM_DB", db_name)
    found = examples()
    assert len(found) >= 10
    for line, code in found:
        try:
            exec(compile(code, f"{PAGE.name}:{line}", "exec"), {"__name__": "__main__"})
        except Exception as exc:
            raise AssertionError(f"the example at {PAGE.name} line {line} failed: {exc!r}") from exc
        printed = capsys.readouterr().out
        assert "print(" not in code or printed, f"the example at line {line} printed nothing"
    assert db.events.count_documents({"stream": "bob"}) == 3  # started, login once, renamed
    assert db.sessions.find_one({"_id": "bob"})["login_count"] == 1
