"""The common input line in one look (events.event_from_plain, publishing.parse_line): wherever
the one-look path takes a line, the event equals what the field-by-field path makes of it, and
every line it declines still gets the field-by-field path's verdict."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import same

from evstream.events import (
    EventInput,
    InvalidEvent,
    event_from_object,
    event_from_plain,
    redact_event,
)
from evstream.publishing import parse_line
from evstream.storage.codec import loads, loads_plain

# Names the validator treats differently: secrets, '$', NUL, blanks, control characters.
names = st.sampled_from(
    ["a", "email", "password", "apiKey", "$set", "a\x00b", "", " x", "x ", "n\x07", "ok.dotted"]
) | st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # any size: beyond 64 bits the fast parser would read floats
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([2.0**63, -(2.0**63), 9.2e18, 1e300])
    | st.text(max_size=6)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["login", "cart.item_added", "", "$x", 7, None, "a" * 300]),
        "stream": st.sampled_from(["alice", "user-000001", " alice", "b\x00", 3, None]),
        "data": values,
        "meta": values,
        "id": st.sampled_from(["evt-1", "", "$id", 5, None, "i" * 300]),
        "expected_version": st.sampled_from(
            [0, 3, -1, 2.0, True, "1", None, 2**64, 2**63 - 1, 2**63 - 2, 1e30]
        ),
        "version": st.sampled_from([1, 2]),
        "other": st.just(1),
    },
)


# Lines that are valid apart, perhaps, from their data and meta: most reach the one-look path.
new_events = st.fixed_dictionaries(
    {"type": st.just("login"), "stream": st.just("alice")},
    optional={"data": values, "meta": values},
)


def verdict(call: Any) -> tuple[str, Any]:
    """('ok', the event as a dict) or ('error', the message)."""
    try:
        event = call()
    except InvalidEvent as exc:
        return ("error", str(exc))
    if event is None:
        return ("ok", None)
    found = asdict(event)
    found.pop("clean")  # how it was checked, not what it is
    return ("ok", found)


def field_by_field(text: str, line: int) -> EventInput:
    """What parse_line did before the one-look path: parse exactly, check field by field."""
    try:
        obj = loads(text)
    except ValueError as exc:
        raise InvalidEvent(f"not valid JSON: {exc}", line=line) from None
    return event_from_object(obj, line=line)


@settings(max_examples=600, deadline=None)
@given(fields | new_events)
def test_the_one_look_path_agrees_with_field_by_field(obj: dict[str, Any]) -> None:
    text = json.dumps(obj)
    slow = verdict(lambda: field_by_field(text, 3))
    plain = loads_plain(text)
    fast = None if plain is None else event_from_plain(plain, 3)
    if fast is not None:
        # Taken in one look: only a valid line, and the very event the long way makes.
        assert slow[0] == "ok"
        assert same(verdict(lambda: fast)[1], slow[1])
    # parse_line, whichever path it takes, says what the field-by-field path says.
    assert same(verdict(lambda: parse_line(text.encode(), 3, keep_secrets=True)), slow)


@settings(max_examples=600, deadline=None)
@given(fields | new_events)
def test_objects_taken_in_one_look_are_valid_and_the_same(obj: dict[str, Any]) -> None:
    # As parsed values, not through text: names with '$' reach the one-look path this way.
    fast = event_from_plain(obj, 2)
    if fast is not None:
        slow = verdict(lambda: event_from_object(obj, line=2))
        assert slow[0] == "ok"
        assert same(verdict(lambda: fast)[1], slow[1])


@settings(max_examples=300, deadline=None)
@given(fields)
def test_a_clean_event_has_nothing_to_redact(obj: dict[str, Any]) -> None:
    text = json.dumps(obj)
    plain = loads_plain(text)
    fast = None if plain is None else event_from_plain(plain)
    if fast is None or not fast.clean:
        return
    slow = event_from_object(loads(text))
    assert redact_event(slow) == []  # the long way finds no secret either


@pytest.mark.parametrize(
    "line",
    [
        '{"type": "login", "stream": "alice", "data": {"n": 123456789012345678901234567890}}',
        '{"type": "login", "stream": "alice", "data": {"n": [18446744073709551616]}}',
        '{"type": "login", "stream": "alice", "data": {"n": -9223372036854775809}}',
    ],
)
def test_whole_numbers_beyond_64_bits_are_refused_not_rounded(line: str) -> None:
    # orjson reads these as floats; the one-look path must not take them as valid floats.
    with pytest.raises(InvalidEvent, match="beyond MongoDB's 8-byte ints"):
        parse_line(line.encode(), 1)


def test_the_one_look_path_takes_the_common_line_and_says_it_has_no_secrets() -> None:
    text = '{"type": "login", "stream": "alice", "data": {"username": "alice", "n": 1}}'
    event = event_from_plain(loads_plain(text), 1)
    assert event is not None and event.clean
    assert (event.type, event.stream, event.data, event.line) == (
        "login",
        "alice",
        {"username": "alice", "n": 1},
        1,
    )


@pytest.mark.parametrize(
    "data",
    [{"password": "hunter2"}, {"user": {"apiKey": "k"}}, {"list": [{"token": "t"}]}],
)
def test_a_secret_looking_name_anywhere_is_still_redacted(data: dict[str, Any]) -> None:
    line = json.dumps({"type": "login", "stream": "alice", "data": data}).encode()
    event = parse_line(line, 1)
    assert event is not None and not event.clean
    assert redact_event(event)  # replaced
    assert "[redacted]" in json.dumps(event.data)


def test_field_names_are_judged_again_once_the_cache_is_full() -> None:
    # Many distinct field-name sets: the cache is cleared, not grown without bound, and a
    # secret seen after the clearing is still found.
    for i in range(5000):
        assert event_from_plain({"type": "t", "stream": "s", "data": {f"k{i}": 1}}) is not None
    event = event_from_plain({"type": "t", "stream": "s", "data": {"password": "x"}})
    assert event is not None and not event.clean


@pytest.mark.parametrize("depth", [99, 100, 101, 150])
def test_nesting_is_limited_the_same_way_on_both_paths(depth: int) -> None:
    data: Any = 1
    for _ in range(depth):
        data = {"a": data}
    text = json.dumps({"type": "login", "stream": "alice", "data": data})
    assert verdict(lambda: parse_line(text.encode(), 1)) == verdict(lambda: field_by_field(text, 1))


@pytest.mark.parametrize(
    "line",
    [
        '{"type": "t", "stream": "a", "data": {"a": 1e400}}',
        '{"type": "t", "stream": "a", "data": {"a": 1e308}}',
        '{"type": "t", "stream": "a", "meta": {"a": [-1E999]}}',
        '{"type": "t", "stream": "a", "data": {"a": "\\ud800"}}',
        '{"type": "t", "stream": "a", "data": {"a": "\\ud83d\\ude00"}}',
        '{"type": "t", "stream": "a", "data": {"\\udc00": 1}}',
        '{"type": "t", "stream": "\\udc00"}',
        '{"type": "t", "stream": "a", "expected_version": 9223372036854775806}',
        '{"type": "t", "stream": "a", "expected_version": 9223372036854775807}',
        '{"type": "t", "stream": "a", "expected_version": 99999999999999999999}',
    ],
)
def test_values_no_server_stores_get_one_verdict_on_both_paths(line: str) -> None:
    found = verdict(lambda: parse_line(line.encode(), 1))
    assert found == verdict(lambda: field_by_field(line, 1))
    if "1e308" in line or "ude00" in line or "775806" in line:
        assert found[0] == "ok"
    else:
        assert found[0] == "error"


# --- objects from code (the Python API's append_many): the file's verdict, without the text ---

surrogates = st.sampled_from(["\ud800", "a\udfffb", "\ud83d"])
object_values = st.recursive(
    scalars | surrogates,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(names | surrogates, inner, max_size=3),
    max_leaves=12,
)
objects = st.fixed_dictionaries(
    {"type": st.just("login"), "stream": st.sampled_from(["alice", "a\ud800"])},
    optional={"data": object_values, "meta": object_values},
)


def file_verdict(obj: dict[str, Any]) -> tuple[str, Any]:
    """What `publish --file` says of the object's line; a JSON parser's refusal (a lone
    surrogate) as the reason alone, as an object has no text to be invalid JSON."""
    found = verdict(lambda: parse_line(json.dumps(obj).encode(), 3, keep_secrets=True))
    if found[0] == "error":
        return ("error", found[1].replace("not valid JSON: ", ""))
    return found


@settings(max_examples=600, deadline=None)
@given(fields | new_events | objects)
def test_an_object_gets_its_lines_verdict(obj: dict[str, Any]) -> None:
    from evstream.publishing import parse_object

    got = verdict(lambda: parse_object(obj, 3, keep_secrets=True))
    want = file_verdict(obj)
    if got[0] == "ok" and want[0] == "ok":
        assert same(got[1], want[1])
    else:
        assert got[0] == want[0], (got, want)
        if "surrogate" not in want[1]:  # what a parser finds first, an object's check later
            assert got == want


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"a": "\ud800"}, "line 2: data.a holds a lone UTF-16 surrogate"),
        ({"x": [{"\udc00": 1}]}, "line 2: 'data.x[0].\\udc00' holds a lone"),
        ({"a": "x" * (16 * 1024 * 1024)}, "line 2: event is 16.0 MB; MongoDB stores documents"),
    ],
)
def test_objects_that_no_document_can_hold_are_refused_as_their_lines_are(
    data: dict[str, Any], reason: str
) -> None:
    from evstream.publishing import parse_object

    obj = {"type": "t", "stream": "a", "data": data}
    with pytest.raises(InvalidEvent) as caught:
        parse_object(obj, 2)
    assert str(caught.value).startswith(reason)
    assert verdict(lambda: parse_line(json.dumps(obj).encode(), 2))[0] == "error"


def test_an_object_the_size_bound_cannot_clear_is_measured_and_taken_when_it_fits() -> None:
    from evstream.publishing import parse_object

    # 5 Mi characters of three bytes each: 15 MB in BSON, over the one look's bound (4 bytes a
    # character), so measured exactly, and it fits.
    data = {"a": "\u20ac" * (5 * 1024 * 1024)}
    assert event_from_plain({"type": "t", "stream": "a", "data": data}, texts=True) is None
    assert parse_object({"type": "t", "stream": "a", "data": data}, 2).data is data
