"""JSON in MongoDB's Extended JSON (docs/storage.md, "Layout"): what bson knows, for services
that must not import it."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from bson import json_util
from bson.errors import BSONError

_LONG_DIGITS = re.compile(r"\d{19}")


def loads(text: str) -> Any:
    """Parse JSON, reading MongoDB Extended JSON ($date, $oid …) where the text has any.

    Plain JSON goes through orjson, three times faster than the standard library's parser.
    orjson turns whole numbers beyond 64 bits into floats without a word, so text with a run
    of 19 digits or more (where such a number could be) goes to the standard library, which
    keeps them whole for validation to refuse; so does what orjson refuses (NaN, Infinity).
    Both paths accept the same inputs and give the same values.
    """
    try:
        if '"$' in text:
            return json_util.loads(text)
        if _LONG_DIGITS.search(text) is None:
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                pass
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (TypeError, ArithmeticError, BSONError) as exc:
        # Malformed Extended JSON ({"$oid": "zz"}, {"$date": [1]} …) raises these, not ValueError.
        raise ValueError(str(exc)[:200]) from None
