"""Property: any interleaving of publishes (some late, some from clocks behind), full,
incremental and partitioned runs of a user projection gives the independent fold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_projection import CARTS, expected_carts
from test_rebuild import Log

from evstream.events import partition_of
from evstream.projection import plan_rebuild, rebuild
from evstream.projections import load_projection
from evstream.settings import Settings
from evstream.storage import connect

PARTS = 3
STREAMS = [f"c{i}" for i in range(8)]
TYPES = ["cart.created", "cart.item_added", "cart.checked_out", "page.viewed", "search", "login"]
LAGS = [0.0, 0.0, 0.0, 0.3, 2.0, 40.0, 3600.0]  # seconds behind now: late, or clocks behind

publish = st.tuples(
    st.just("publish"),
    st.lists(
        st.tuples(
            st.sampled_from(STREAMS),
            st.sampled_from(TYPES),
            st.integers(1, 9),
            st.sampled_from(LAGS),
        ),
        min_size=1,
        max_size=6,
    ),
)
run = st.tuples(
    st.sampled_from(["full", "incremental", "incremental"]),
    st.sampled_from([None, None, 1, 2, 3]),
    st.sampled_from([0.0, 1.0, 30.0]),
)
histories = st.lists(st.one_of(publish, run), min_size=2, max_size=12)


@pytest.fixture
def store_and_client(server_uri: str) -> Iterator[tuple[Any, Any]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(server_uri, tz_aware=True)
    store = connect(Settings(uri=server_uri, db="unused"), lambda message: None)
    try:
        yield store, client
    finally:
        store.close()
        client.close()


def in_part(stream: str, part: int | None) -> bool:
    return part is None or partition_of(stream, PARTS) == part


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories)
def test_any_interleaving_of_runs_gives_the_fold(store_and_client, history):
    store, client = store_and_client
    name = f"prop_{uuid.uuid4().hex[:12]}"
    db = client[name]
    store.db = store.client.get_database(name, read_preference=store.db.read_preference)
    carts = load_projection("carts", CARTS)
    log = Log(db)
    try:
        for op in history:
            if op[0] == "publish":
                now = datetime.now(timezone.utc)
                log.add(
                    *(
                        log.event(
                            stream,
                            kind,
                            {"owner": stream}
                            if kind == "cart.created"
                            else {"sku": f"k{n}", "price": n},
                            ts=now - timedelta(seconds=lag),
                        )
                        for stream, kind, n, lag in op[1]
                    )
                )
                continue
            mode, part, margin = op
            plan = plan_rebuild(
                store,
                carts,
                incremental=mode == "incremental",
                margin=margin,
                part=None if part is None else (part, PARTS),
            )
            rebuild(store, plan, batch_size=3)
            want = expected_carts(db)
            got = {d["_id"]: d for d in db.carts.find()}
            mine = {k: v for k, v in want.items() if in_part(k, part)}
            assert {k: v for k, v in got.items() if in_part(k, part)} == mine, (mode, part)
        for part in range(1, PARTS + 1):
            rebuild(store, plan_rebuild(store, carts, incremental=True, part=(part, PARTS)))
        assert {d["_id"]: d for d in db.carts.find()} == expected_carts(db)
        rebuild(store, plan_rebuild(store, carts, incremental=True))
        assert {d["_id"]: d for d in db.carts.find()} == expected_carts(db)
    finally:
        client.drop_database(name)
