"""The one rule for which part owns a change (evstream.events.part_of_stream / part_of_change),
which watch --partition, rebuild --partition and the API share (docs/delivery.md, "Partitions")."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from evstream.events import (
    NO_STREAM_PART,
    canonical_text,
    part_of_change,
    part_of_stream,
    partition_of,
)
from evstream.projection import in_part
from evstream.watching import Change, PartOwner

leaves = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.datetimes(timezones=st.just(timezone.utc))
)
streams = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
parts = st.integers(min_value=1, max_value=64)
ids = st.text(min_size=1, max_size=8) | st.integers()


@given(streams, parts)
def test_every_stream_has_one_part_in_range_and_keeps_it(stream: Any, n: int) -> None:
    part = part_of_stream(stream, n)
    assert 1 <= part <= n
    assert part_of_stream(stream, n) == part  # the same value, the same part, every time


@given(st.text(), parts)
def test_a_string_stream_keeps_the_part_it_always_had(stream: str, n: int) -> None:
    assert part_of_stream(stream, n) == partition_of(stream, n)


@given(st.integers(min_value=-(2**53), max_value=2**53), parts)
def test_an_integer_and_the_same_double_are_one_stream(number: int, n: int) -> None:
    """MongoDB finds 5, 5.0 and NumberLong(5) equal: they are one stream, in one part."""
    assert part_of_stream(number, n) == part_of_stream(float(number), n)
    assert canonical_text(number) == canonical_text(float(number))


def test_no_stream_goes_to_the_documented_part() -> None:
    assert NO_STREAM_PART == 1
    assert part_of_stream(None, 7) == NO_STREAM_PART
    assert part_of_change(7, {"_id": "x"}, {"_id": "x", "type": "t"}) == NO_STREAM_PART
    assert part_of_change(7, {"_id": "x"}, None) == NO_STREAM_PART  # a delete, stream unknown


def test_objects_differ_by_field_order_as_mongodb_compares_them() -> None:
    assert canonical_text({"a": 1, "b": 2}) != canonical_text({"b": 2, "a": 1})
    assert canonical_text("5") != canonical_text(5)  # a string is not the number
    same = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    assert canonical_text(same) == canonical_text(same.replace(tzinfo=None))


@given(streams, ids, parts)
def test_every_change_of_a_stream_goes_to_the_streams_part(stream: Any, ident: Any, n: int) -> None:
    want = part_of_stream(stream, n)
    doc = {"_id": ident, "stream": stream, "version": 1, "type": "t"}
    key = {"_id": ident}
    assert part_of_change(n, key, doc) == want  # insert, update, replace
    assert part_of_change(n, {"stream": stream, "_id": ident}, None) == want  # sharded delete
    assert part_of_change(n, key, None, before=doc) == want  # a delete with its pre-image
    assert part_of_change(n, key, None, seen=stream) == want  # a delete of an event seen


@given(st.text(min_size=1, max_size=8), parts)
def test_rebuild_and_watch_agree_on_a_stream(stream: str, n: int) -> None:
    owners = [i for i in range(1, n + 1) if in_part(stream, (i, n))]
    assert owners == [part_of_stream(stream, n)]
    # A projection's document is keyed by its stream: watched, it goes where rebuild put it.
    for op, doc in (("update", {"_id": stream, "count": 1}), ("delete", None)):
        change = Change(op, "sessions", {"_id": stream}, doc)
        assert [i for i in range(1, n + 1) if PartOwner((i, n)).owns(change)] == owners


changes = st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "update"]), st.integers(0, 9), streams),
    max_size=40,
)


@given(changes, st.integers(min_value=2, max_value=5))
def test_a_watch_split_in_parts_hands_each_change_to_exactly_the_streams_part(
    steps: list[tuple[str, int, Any]], n: int
) -> None:
    """N watchers over one log: each change to exactly one, its stream's, deletes included
    (each watcher is handed every change and remembers the streams of the events it saw)."""
    owners = [PartOwner((i, n)) for i in range(1, n + 1)]
    stored: dict[str, Any] = {}  # _id → stream, as the log holds it
    for op, number, stream in steps:
        ident = f"e{number}"
        if op == "delete":
            if ident not in stored:
                continue
            change = Change("delete", "events", {"_id": ident}, None)
            want = part_of_stream(stored.pop(ident), n)
        else:
            if op == "update" and ident not in stored:
                continue
            if op == "insert":
                stored[ident] = stream
            doc = {"_id": ident, "stream": stored[ident], "version": 1, "type": "t"}
            change = Change(op, "events", {"_id": ident}, doc)
            want = part_of_stream(stored[ident], n)
        assert [o.part[0] for o in owners if o.owns(change)] == [want]


def test_a_delete_of_an_event_the_watch_never_saw_goes_to_part_one() -> None:
    owners = [PartOwner((i, 3)) for i in (1, 2, 3)]
    change = Change("delete", "events", {"_id": "never-seen"}, None)
    assert [o.part[0] for o in owners if o.owns(change)] == [NO_STREAM_PART]


def test_the_memory_of_streams_is_bounded() -> None:
    owner = PartOwner((1, 2), remember=3)
    for i in range(10):
        owner.owns(Change("insert", "events", {"_id": f"e{i}"}, {"_id": f"e{i}", "stream": "s"}))
    assert list(owner.streams) == ["e7", "e8", "e9"]
