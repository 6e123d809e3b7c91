"""JSON in MongoDB's Extended JSON (docs/storage.md, "Layout"): what bson knows, for services
that must not import it."""

from __future__ import annotations

import json
from typing import Any

from bson import json_util
from bson.errors import BSONError


def loads(text: str) -> Any:
    """Parse JSON, reading MongoDB Extended JSON ($date, $oid …) where the text has any."""
    try:
        if '"$' in text:
            return json_util.loads(text)
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (TypeError, ArithmeticError, BSONError) as exc:
        # Malformed Extended JSON ({"$oid": "zz"}, {"$date": [1]} …) raises these, not ValueError.
        raise ValueError(str(exc)[:200]) from None
