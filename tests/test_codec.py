"""storage.codec.loads: the fast parser and the standard library give the same values."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evstream.storage.codec import loads

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # any size: beyond 64 bits orjson would make them floats
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), values, max_size=6))
def test_loads_gives_what_the_standard_library_gives(obj: dict[str, Any]) -> None:
    text = json.dumps(obj)
    if '"$' in text:  # Extended JSON goes to bson's parser: another test's business
        return
    assert same(loads(text), json.loads(text))


def test_whole_numbers_beyond_64_bits_stay_whole() -> None:
    assert loads('{"n": 99999999999999999999999}') == {"n": 99999999999999999999999}
    assert type(loads('{"n": -9223372036854775809}')["n"]) is int


def test_what_the_fast_parser_refuses_is_read_as_before() -> None:
    assert math.isnan(loads('{"x": NaN}')["x"])
    assert loads('{"x": Infinity}')["x"] == math.inf
