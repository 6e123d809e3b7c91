"""On a real MongoDB (EVSTREAM_TEST_URI), the rebuild's reads are served by indexes with no
blocking sort. nx-27017 uses no secondary index at all, so there is nothing to check there."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import pytest

from evstream.settings import Settings
from evstream.storage import connect, ensure_indexes
from evstream.storage.projections import type_filter

pytestmark = pytest.mark.skipif(
    not os.environ.get("EVSTREAM_TEST_URI"), reason="needs a real MongoDB in EVSTREAM_TEST_URI"
)


def stages(plan: Any) -> list[str]:
    found: list[str] = []
    if isinstance(plan, dict):
        if "stage" in plan:
            found.append(plan["stage"])
        for value in plan.values():
            found += stages(value)
    elif isinstance(plan, list):
        for item in plan:
            found += stages(item)
    return found


def test_the_window_and_the_full_read_use_indexes_and_sort_nothing(server_uri, db_name, db):
    store = connect(Settings(uri=server_uri, db=db_name), lambda message: None)
    try:
        if store.product != "MongoDB":
            pytest.skip("not a MongoDB server")
        ensure_indexes(store)
        db.events.insert_one(
            {"_id": "e", "stream": "s", "version": 1, "type": "t", "ts": datetime.now(timezone.utc)}
        )
        since = datetime(2020, 1, 1, tzinfo=timezone.utc)
        window = (
            db.events.find({"ts": {"$gte": since}, **type_filter(["t", "u"])})
            .sort("ts", 1)
            .explain()
        )
        full = (
            db.events.find(type_filter(["t", "u"])).sort([("stream", 1), ("version", 1)]).explain()
        )
        for plan in (window, full):
            found = stages(plan["queryPlanner"]["winningPlan"])
            assert "IXSCAN" in found and "SORT" not in found and "COLLSCAN" not in found, found
    finally:
        store.close()
