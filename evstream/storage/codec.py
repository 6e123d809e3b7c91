"""BSON values for services that must not import bson (docs/storage.md, "Layout"): Extended JSON
in and out, ids as sortable keys."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson
from bson import ObjectId, json_util
from bson.errors import BSONError
from bson.tz_util import utc as bson_utc

from evstream.events import SURROGATE_REASON, find_surrogate

UTC = timezone.utc
_LONG_DIGITS = re.compile(r"\d{19}")
# Where a lone UTF-16 surrogate could come from: a JSON escape of one, or one already in the text
# (a command-line argument that was not UTF-8). orjson refuses both; the standard parser keeps them.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_INFINITY = float("inf")


def _finite(text: str) -> float:
    """A JSON number as a float; one beyond an 8-byte float's range (1e400) is refused, not
    turned into infinity (docs/data-model.md, "Validation")."""
    value = float(text)
    if value == _INFINITY or value == -_INFINITY:
        raise ValueError(f"the number {text[:40]} is beyond the range of an 8-byte float")
    return value


def loads(text: str) -> Any:
    """Parse JSON, reading MongoDB Extended JSON ($date, $oid …) where the text has any.

    Plain JSON goes through orjson, three times faster than the standard library's parser.
    orjson turns whole numbers beyond 64 bits into floats without a word, so text with a run
    of 19 digits or more (where such a number could be) goes to the standard library, which
    keeps them whole for validation to refuse; so does what orjson refuses (NaN, Infinity).
    Both paths accept the same inputs and give the same values, and refuse what no server can
    store: a number beyond an 8-byte float (1e400, which would become infinity) and a lone
    UTF-16 surrogate in a string or a field name.
    """
    try:
        if '"$' in text:
            value = json_util.loads(text, parse_float=_finite)
        else:
            if _LONG_DIGITS.search(text) is None:
                try:
                    return orjson.loads(text)
                except orjson.JSONDecodeError:
                    pass
            value = json.loads(text, parse_float=_finite)
        if _SURROGATE_ESCAPE.search(text) or (not text.isascii() and _SURROGATE.search(text)):
            where = find_surrogate(value, "")
            if where is not None:
                raise ValueError(f"{where or 'the value'} {SURROGATE_REASON}")
        return value
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (TypeError, ArithmeticError, BSONError) as exc:
        # Malformed Extended JSON ({"$oid": "zz"}, {"$date": [1]} …) raises these, not ValueError.
        raise ValueError(str(exc)[:200]) from None


def loads_plain(text: str) -> Any:
    """Parse plain JSON with orjson, or None for text that `loads` must read: Extended JSON
    ($date, $oid …) or what orjson refuses (NaN, lone surrogates …).

    Whole numbers beyond 64 bits come back as floats from orjson; a caller that keeps such a
    value must check floats of that size itself (evstream.events.event_from_plain does).
    """
    if '"$' in text:
        return None
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError):
        return None


def aware(when: datetime) -> datetime:
    """A datetime in UTC; naive ones are taken to be UTC already (as BSON dates are)."""
    tz = when.tzinfo
    if tz is UTC or tz is bson_utc:
        return when
    return when.replace(tzinfo=UTC) if tz is None else when.astimezone(UTC)


def id_key(value: Any) -> tuple[int, Any]:
    """A sortable, hashable stand-in for an _id, ordered by type as BSON orders them."""
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, ObjectId):
        return (7, str(value))
    if isinstance(value, datetime):
        return (9, aware(value).isoformat())
    if isinstance(value, bytes):
        return (5, value)
    return (3, json_util.dumps(value))


def key_text(key: Mapping[str, Any]) -> str:
    """A document key (every field of it: a sharded collection's includes the shard key) as
    one hashable string."""
    return json_util.dumps(dict(key), sort_keys=True)


def doc_hash(doc: Mapping[str, Any]) -> int:
    """A hash of a whole document, equal for equal documents."""
    return hash(json_util.dumps(doc, sort_keys=True))


def extended_json(value: Any) -> str:
    """A value as Extended JSON text (for messages)."""
    return json_util.dumps(value)


_DECODER = json.JSONDecoder()
_ID_PREFIX = '{"_id": '


def loads_stored(text: str) -> Any:
    """A stored event's JSON line (`watch -o json`, an archive), read as `loads` reads it, a few
    times faster: orjson, then only the Extended JSON values converted (dates the common case)."""
    if _LONG_DIGITS.search(text) is not None:
        return loads(text)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return loads(text)
    return _extended(value) if '"$' in text else value


def _extended(value: Any) -> Any:
    if type(value) is dict:
        if value and next(iter(value)).startswith("$"):
            date = value.get("$date")
            if len(value) == 1 and type(date) is str and date.endswith("Z"):
                try:
                    return datetime.fromisoformat(date[:-1] + "+00:00")
                except ValueError:
                    pass
            try:
                return json_util.object_hook({k: _extended(v) for k, v in value.items()})
            except (TypeError, ArithmeticError, BSONError) as exc:
                raise ValueError(str(exc)[:200]) from None
        for key, item in value.items():
            if type(item) is dict or type(item) is list:
                value[key] = _extended(item)
        return value
    if type(value) is list:
        return [_extended(item) for item in value]
    return value


def line_id(text: str) -> Any:
    """The `_id` of a stored event's JSON line, reading no further than it where the line starts
    with it (as lines evstream writes do)."""
    if text.startswith(_ID_PREFIX):
        try:
            value, _ = _DECODER.raw_decode(text, len(_ID_PREFIX))
        except ValueError:
            return loads(text)["_id"]
        return _extended(value) if type(value) is dict else value
    return loads(text)["_id"]
