"""Events the server will not store though they are valid: one clear line, an exact account.

MongoDB refuses a document its collection validator rejects (code 121); nx-27017, the embedded
dev store, keeps documents as JSON and refuses NaN, ±Infinity, Decimal128, regular expressions,
Timestamps and MinKey/MaxKey. On nx-27017 those are found while the input is checked, so a file
with one writes nothing; MongoDB stores them.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from bson import Decimal128, MaxKey, MinKey, Regex, Timestamp
from pymongo.errors import BulkWriteError, WriteError

from evstream.errors import EventRefused
from evstream.events import EventInput
from evstream.publishing import publish_stream
from evstream.storage import Appender, Nx27017Store, Store, append_one

VALIDATION_FAILED = {"code": 121, "errmsg": "Document failed validation"}


def ndjson(rows: list[Any]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


# --- any server: a write error other than a duplicate key ------------------------------------


def refuse_from(mock_store: Store, monkeypatch: pytest.MonkeyPatch, stream: str) -> None:
    """A validator that rejects every event of `stream`: ordered inserts stop there."""
    collection = type(mock_store.events)
    insert_many = collection.insert_many

    def validated(self: Any, docs: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        docs = list(docs)
        bad = next((i for i, d in enumerate(docs) if d["stream"] == stream), None)
        if bad is None:
            return insert_many(self, docs, *args, **kwargs)
        if bad:
            insert_many(self, docs[:bad], *args, **kwargs)
        raise BulkWriteError(
            {"writeErrors": [{"index": bad, **VALIDATION_FAILED}], "nInserted": bad}
        )

    monkeypatch.setattr(collection, "insert_many", validated)


def test_a_refused_batch_stops_with_the_line_and_an_exact_account(
    mock_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_from(mock_store, monkeypatch, "bad")
    lines = [{"type": "t", "stream": f"s{i % 7}"} for i in range(1500)]
    lines += [{"type": "t", "stream": "bad"}, {"type": "t", "stream": "s1"}]
    with pytest.raises(EventRefused) as caught:
        publish_stream(mock_store, io.BytesIO(ndjson(lines).encode()), batch_size=1000)
    assert caught.value.exit_code == 2
    assert caught.value.message == (
        "line 1501: the server refused the event for stream 'bad': Document failed validation "
        "(code 121); 1500 event(s) before it were stored"
    )
    assert mock_store.events.count_documents({}) == 1500
    assert mock_store.events.count_documents({"stream": "bad"}) == 0


def test_the_appender_counts_what_was_stored_before_the_refusal(
    mock_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_from(mock_store, monkeypatch, "bad")
    appender = Appender(mock_store)
    batch = [EventInput(type="t", stream=s, data={}, line=n) for n, s in enumerate("aab", 1)]
    batch.insert(2, EventInput(type="t", stream="bad", data={}, line=9))
    with pytest.raises(EventRefused, match="^line 9: the server refused the event for stream"):
        appender.write(batch)
    assert appender.inserted == 2 and appender.duplicates == 0
    assert [d["stream"] for d in mock_store.events.find()] == ["a", "a"]


def test_one_refused_event_writes_nothing(
    mock_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Any, doc: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        raise WriteError(VALIDATION_FAILED["errmsg"], 121, VALIDATION_FAILED)

    monkeypatch.setattr(type(mock_store.events), "insert_one", refuse)
    with pytest.raises(EventRefused) as caught:
        append_one(mock_store, EventInput(type="t", stream="alice", data={}))
    assert caught.value.message == (
        "the server refused the event for stream 'alice': Document failed validation "
        "(code 121); nothing was written"
    )


# --- what nx-27017 cannot store ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"x": math.nan}, "data.x is nan"),
        ({"x": [1, {"y": math.inf}]}, "data.x.1.y is inf"),
        ({"x": -math.inf}, "data.x is -inf"),
        ({"price": Decimal128("1.50")}, "data.price is a Decimal128"),
        ({"re": Regex("^a")}, "data.re is a regular expression"),
        ({"t": Timestamp(1, 2)}, "data.t is a Timestamp"),
        ({"lo": MinKey(), "hi": MaxKey()}, "data.lo is MinKey"),
    ],
)
def test_nx27017_names_the_first_value_it_cannot_store(data: dict[str, Any], said: str) -> None:
    event = EventInput(type="t", stream="s", data=data)
    assert NX.unstorable(event) == (f"{said}, which nx-27017 (the embedded dev store) cannot store")


def test_nx27017_stores_the_rest_and_looks_at_meta_too() -> None:
    fine = {"f": 1.5, "n": None, "s": "NaN", "l": [1, "Infinity", {"z": -0.0}], "i": 2**62}
    assert NX.unstorable(EventInput(type="t", stream="s", data=fine)) is None
    meta = EventInput(type="t", stream="s", data=fine, meta={"cost": Decimal128("2")})
    assert NX.unstorable(meta) == (
        "meta.cost is a Decimal128, which nx-27017 (the embedded dev store) cannot store"
    )


def test_input_text_without_a_hint_is_not_walked() -> None:
    # Such text cannot hold one of these values; the event here is made up to show the skip.
    event = EventInput(type="t", stream="s", data={"x": math.nan})
    assert NX.unstorable(event, '{"type": "t", "stream": "s"}') is None
    assert NX.unstorable(event, '{"data": {"x": NaN}}') is not None


# --- through the CLI, on whichever server the suite runs against ------------------------------

UNSTORABLE_LINES = [
    '{"type": "t", "stream": "a", "data": {"x": NaN}}',
    '{"type": "t", "stream": "a", "data": {"price": {"$numberDecimal": "1.50"}}}',
]


NX = Nx27017Store.__new__(Nx27017Store)


def is_nx27017(client: Any) -> bool:
    from evstream.storage.nx27017 import is_nx27017 as named_nx27017

    return named_nx27017(client.admin.command("buildInfo"))


@pytest.mark.parametrize("line", UNSTORABLE_LINES)
def test_a_file_with_a_value_the_server_cannot_store(
    cli: Any, db: Any, client: Any, tmp_path: Path, line: str
) -> None:
    path = tmp_path / "e.ndjson"
    path.write_text(ndjson([{"type": "t", "stream": "a"}, line, {"type": "t", "stream": "a"}]))
    r = cli("publish", "-f", str(path))
    if not is_nx27017(client):
        assert r.exit_code == 0, r.stderr  # MongoDB stores NaN and Decimal128
        assert db.events.count_documents({}) == 3
        return
    assert r.exit_code == 2
    [error] = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert error.startswith("error: line 2: data.")
    assert error.endswith(
        "which nx-27017 (the embedded dev store) cannot store; nothing was written"
    )
    assert db.events.count_documents({}) == 0

    r = cli("publish", "-f", str(path), "--skip-invalid", "-o", "json")
    assert r.exit_code == 0 and "skipped line 2: data." in r.stderr
    assert json.loads(r.stdout)["published"] == 2


def test_stdin_stops_at_the_value_with_an_exact_account(cli: Any, db: Any, client: Any) -> None:
    good = [{"type": "t", "stream": f"s{i % 3}"} for i in range(1200)]
    r = cli("publish", "-f", "-", input=ndjson([*good, UNSTORABLE_LINES[0], *good]))
    if not is_nx27017(client):
        assert r.exit_code == 0, r.stderr
        return
    assert r.exit_code == 2
    assert (
        "error: line 1201: data.x is nan, which nx-27017 (the embedded dev store) cannot store; "
        "1200 event(s) before it were stored"
    ) in r.stderr
    assert db.events.count_documents({}) == 1200


def test_one_event_with_a_value_the_server_cannot_store(cli: Any, db: Any, client: Any) -> None:
    r = cli("publish", "t", "-s", "a", "-d", '{"x": {"$numberDecimal": "1.5"}}')
    if not is_nx27017(client):
        assert r.exit_code == 0, r.stderr
        return
    assert r.exit_code == 2
    assert r.stderr.strip().endswith(
        "error: data.x is a Decimal128, which nx-27017 (the embedded dev store) cannot store; "
        "nothing was written"
    )
    assert db.events.count_documents({}) == 0
