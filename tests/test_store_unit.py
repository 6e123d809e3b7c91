"""Unit tests of the append logic on mongomock, where its behaviour is faithful (plain CRUD)."""

from __future__ import annotations

from typing import Any

import pytest

from evstream.errors import ConcurrencyConflict
from evstream.events import EventInput
from evstream.storage.log import Appender, Store, append_one, is_id_conflict, stream_heads


def ev(stream: str, type_: str = "t", **kw: Any) -> EventInput:
    return EventInput(type=type_, stream=stream, data=kw.pop("data", {}), **kw)


def versions(mock_store: Store, stream: str) -> list[int]:
    return [d["version"] for d in mock_store.events.find({"stream": stream}).sort("version", 1)]


def test_versions_follow_input_order_per_stream_across_batches(mock_store: Store) -> None:
    appender = Appender(mock_store)
    batch1 = [ev("a", data={"n": 1}), ev("b", data={"n": 2}), ev("a", data={"n": 3})]
    batch2 = [ev("b", data={"n": 4}), ev("a", data={"n": 5})]
    assert len(appender.write(batch1).inserted) == 3
    assert len(appender.write(batch2).inserted) == 2
    a = list(mock_store.events.find({"stream": "a"}).sort("version", 1))
    assert [(d["version"], d["data"]["n"]) for d in a] == [(1, 1), (2, 3), (3, 5)]
    assert versions(mock_store, "b") == [1, 2]


def test_appends_continue_after_what_is_stored(mock_store: Store) -> None:
    append_one(mock_store, ev("a"))
    append_one(mock_store, ev("a"))
    Appender(mock_store).write([ev("a"), ev("c")])
    assert versions(mock_store, "a") == [1, 2, 3]
    assert stream_heads(mock_store, ["a", "c", "zzz"]) == {"a": 3, "c": 1, "zzz": 0}


def test_known_ids_are_duplicates_not_errors(mock_store: Store) -> None:
    appender = Appender(mock_store)
    first = appender.write([ev("a", id="e1"), ev("a", id="e2")])
    again = Appender(mock_store).write([ev("a", id="e1"), ev("a", id="e3"), ev("a", id="e3")])
    assert len(first.inserted) == 2
    assert [d["_id"] for d in again.inserted] == ["e3"]
    assert [e.id for e in again.duplicates] == ["e1", "e3"]
    assert versions(mock_store, "a") == [1, 2, 3]


def test_a_cached_head_that_fell_behind_is_refreshed(mock_store: Store) -> None:
    appender = Appender(mock_store)
    appender.write([ev("a")])
    append_one(mock_store, ev("a"))  # another writer moves the stream on
    result = appender.write([ev("a", data={"mine": True})])
    assert result.inserted[0]["version"] == 3
    assert versions(mock_store, "a") == [1, 2, 3]


def test_expected_version_conflict_stores_the_prefix_only(mock_store: Store) -> None:
    appender = Appender(mock_store)
    with pytest.raises(
        ConcurrencyConflict, match="stream 'a' is at version 1, not the expected version 5"
    ):
        appender.write([ev("a"), ev("b"), ev("a", expected_version=5, line=3), ev("c")])
    assert mock_store.events.count_documents({}) == 2
    assert versions(mock_store, "c") == []


def test_expected_version_zero_means_a_new_stream(mock_store: Store) -> None:
    append_one(mock_store, ev("a", expected_version=0))
    with pytest.raises(ConcurrencyConflict, match="at version 1, not the expected version 0"):
        append_one(mock_store, ev("a", expected_version=0))
    assert versions(mock_store, "a") == [1]


def test_append_one_with_a_known_id_returns_the_stored_event(mock_store: Store) -> None:
    first = append_one(mock_store, ev("a", id="x", data={"v": 1}))
    second = append_one(mock_store, ev("a", id="x", data={"v": 2}))
    assert not first.duplicate and second.duplicate
    assert second.doc["data"] == {"v": 1}
    assert mock_store.events.count_documents({}) == 1


@pytest.mark.parametrize(
    ("error", "on_id"),
    [
        ({"keyPattern": {"_id": 1}, "errmsg": "E11000 ..."}, True),
        ({"keyPattern": {"stream": 1, "version": 1}, "errmsg": "E11000 ..."}, False),
        (
            {
                "errmsg": 'E11000 duplicate key error collection: db.events index: _id_ dup key: { _id: "x" }'
            },
            True,
        ),
        (
            {
                "errmsg": "E11000 duplicate key error collection: db.events index: stream_1_version_1 dup key"
            },
            False,
        ),
        ({"errmsg": "UNIQUE constraint failed: events._id"}, True),
        ({"errmsg": "UNIQUE constraint failed: index 'idx_events_stream_version'"}, False),
    ],
)
def test_duplicate_key_errors_are_told_apart(error: dict[str, Any], on_id: bool) -> None:
    assert is_id_conflict(error) is on_id


def test_an_empty_log_skips_head_lookups_but_still_yields_to_other_writers(
    mock_store: Store,
) -> None:
    appender = Appender(mock_store)
    appender.write([ev("a")])
    assert appender.optimistic is True
    append_one(mock_store, ev("b", data={"other": True}))  # a stream this run has never seen
    result = appender.write([ev("b", data={"mine": True}), ev("a")])
    assert [(d["stream"], d["version"]) for d in result.inserted] == [("b", 2), ("a", 2)]
    assert appender.optimistic is False
    assert versions(mock_store, "b") == [1, 2]


def test_a_log_with_events_asks_for_heads(mock_store: Store) -> None:
    append_one(mock_store, ev("a"))
    appender = Appender(mock_store)
    appender.write([ev("a")])
    assert appender.optimistic is False
    assert versions(mock_store, "a") == [1, 2]
