"""`evstream status`: bucket planning, rendering into a Console of fixed width, and the command
against a real server."""

from __future__ import annotations

import json
import sys
import types as pytypes
from datetime import datetime, timedelta, timezone
from io import StringIO
from typing import Any

import pytest
from rich.console import Console

from evstream import overview
from evstream.output import (
    activity_chart,
    column_rows,
    human_age,
    human_duration,
    server_view,
    sparkline,
    status_view,
    types_table,
)
from evstream.overview import BucketPlan, is_atlas, plan_buckets, topology

UTC = timezone.utc
NOW = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC)


def render(renderable: Any, width: int = 80, color: bool = False) -> str:
    """Print as `Output` does (soft wrap: rich never folds a line; the terminal may)."""
    console = Console(
        file=StringIO(),
        width=width,
        force_terminal=color,
        color_system="truecolor" if color else None,
        legacy_windows=False,
        soft_wrap=True,
    )
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


# --- bucket planning -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "max_buckets", "size"),
    [
        (timedelta(seconds=0), 48, timedelta(seconds=1)),
        (timedelta(seconds=30), 48, timedelta(seconds=1)),
        (timedelta(seconds=47), 48, timedelta(seconds=1)),
        (timedelta(seconds=60), 48, timedelta(seconds=2)),
        (timedelta(minutes=30), 48, timedelta(minutes=1)),
        (timedelta(hours=6), 48, timedelta(minutes=10)),
        (timedelta(hours=6), 13, timedelta(minutes=30)),
        (timedelta(hours=6), 12, timedelta(hours=1)),
        (timedelta(days=3), 48, timedelta(hours=2)),
        (timedelta(days=300), 48, timedelta(days=7)),
    ],
)
def test_plan_buckets_picks_the_smallest_nice_size_that_fits(age, max_buckets, size):
    plan = plan_buckets(NOW - age, NOW, max_buckets)
    assert plan is not None
    assert plan.size == size
    assert 1 <= plan.count <= max_buckets
    assert plan.start <= NOW - age < plan.start + plan.size
    assert plan.start <= NOW < plan.end
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert (plan.start - epoch) % plan.size == timedelta(0)  # aligned: ticks read well


def test_plan_buckets_edges_are_contiguous():
    plan = plan_buckets(NOW - timedelta(hours=5, minutes=7), NOW, 40)
    assert plan is not None
    edges = plan.boundaries()
    assert len(edges) == plan.count + 1
    assert edges[0] == plan.start and edges[-1] == plan.end
    assert all(b - a == plan.size for a, b in zip(edges, edges[1:], strict=False))


def test_plan_buckets_caps_a_very_old_log_at_the_largest_size_up_to_now():
    plan = plan_buckets(NOW - timedelta(days=365 * 200), NOW, 10)
    assert plan is not None
    assert plan.count == 10
    assert plan.start <= NOW < plan.end


def test_plan_buckets_with_no_events_or_future_events():
    assert plan_buckets(None, NOW) is None
    assert plan_buckets(NOW, NOW, 0) is None
    future = plan_buckets(NOW + timedelta(minutes=5), NOW, 48)
    assert future is not None and future.start <= NOW + timedelta(minutes=5) < future.end


def test_plan_buckets_accepts_naive_utc():
    plan = plan_buckets(datetime(2026, 3, 14, 11, 0), NOW, 48)
    assert plan is not None and plan.start.tzinfo is not None


# --- pure text pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([], ""),
        ([0, 0, 0], "   "),
        ([1], "█"),
        ([0, 8, 4, 1], " █▄▁"),
        ([100, 1], "█▁"),  # a small count still shows a sliver
        ([3, 3, 3], "███"),
    ],
)
def test_sparkline(counts, expected):
    assert sparkline(counts) == expected


def test_column_rows_stack_blocks_top_row_first():
    rows = column_rows([0, 24, 12, 1], height=3)
    assert rows == [" █  ", " █▄ ", " ██▁"]
    assert all(len(row) == 4 for row in rows)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (5, "5 s"),
        (59, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (86399, "23 h"),
        (86400, "1 day"),
        (3 * 86400, "3 days"),
        (400 * 86400, "1 year"),
        (-90, "1 min"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (NOW, "just now"),
        (NOW - timedelta(seconds=1), "just now"),
        (NOW - timedelta(seconds=12), "12 s ago"),
        (NOW - timedelta(minutes=5), "5 min ago"),
        (NOW - timedelta(days=2), "2 days ago"),
        (NOW + timedelta(minutes=3), "in 3 min"),
        (datetime(2026, 3, 14, 11, 0), "1 h ago"),  # naive means UTC, as pymongo returns it
        (None, "never"),
    ],
)
def test_human_age(moment, text):
    assert human_age(moment, NOW) == text


@pytest.mark.parametrize(
    ("hello", "text"),
    [
        ({"msg": "isdbgrid"}, "sharded cluster (mongos)"),
        ({"setName": "rs0", "hosts": ["a:1", "b:1", "c:1"]}, "replica set rs0 (3 members)"),
        ({"setName": "rs0", "hosts": ["a:1"]}, "replica set rs0 (1 member)"),
        ({"isWritablePrimary": True}, "standalone"),
    ],
)
def test_topology(hello, text):
    assert topology(hello) == text


@pytest.mark.parametrize(
    ("uri", "hosts", "atlas"),
    [
        ("mongodb+srv://u:p@cluster0.ab1cd.mongodb.net/?retryWrites=true", [], True),
        ("mongodb://u:p@db1.example.com/", ["ac-x-shard-00-00.ab1cd.mongodb.net:27017"], True),
        ("mongodb://127.0.0.1:27017/?directConnection=true", [], False),
        ("mongodb://mongodb.net.example.com/", [], False),
    ],
)
def test_is_atlas(uri, hosts, atlas):
    assert is_atlas(uri, hosts) is atlas


# --- rendering -----------------------------------------------------------------------------------


def activity(counts: list[int], size: float = 600.0) -> dict[str, Any]:
    start = datetime(2026, 3, 14, 6, 0, tzinfo=UTC)
    end = start + timedelta(seconds=size * len(counts))
    return {"start": start, "end": end, "bucket_seconds": size, "counts": counts}


def test_activity_chart_has_columns_axis_ticks_and_notes():
    text = render(activity_chart(activity([0, 1, 5, 10, 2, 0] * 6), tz=UTC))
    lines = text.splitlines()
    assert len(lines) == 5  # 3 rows of columns, the axis, the ticks
    assert "peak 10" in lines[0]
    assert "per 10 min" in lines[1]
    assert "108 in all" in lines[2]
    assert lines[3].strip() == "─" * 36
    assert lines[4].startswith("06:00") and lines[4].rstrip().endswith("12:00")


def test_activity_chart_without_events():
    assert render(activity_chart(None)).strip() == "no events yet"


@pytest.mark.parametrize(
    ("size", "span_buckets", "left"),
    [(1.0, 30, "06:00:00"), (3600.0, 40, "03-14 06:00"), (86400.0 * 7, 20, "2026-03-14")],
)
def test_activity_chart_tick_format_follows_the_span(size, span_buckets, left):
    text = render(activity_chart(activity([1] * span_buckets, size=size), tz=UTC), width=120)
    assert text.splitlines()[-1].startswith(left)


def test_types_table_lists_the_top_types_and_sums_the_rest():
    rows = [{"type": f"type.{i:02d}", "events": 100 - i} for i in range(15)]
    text = render(types_table(rows, limit=5))
    assert "type.00" in text and "type.04" in text and "type.05" not in text
    total = sum(r["events"] for r in rows)
    rest = sum(r["events"] for r in rows[5:])
    assert "… 10 more types" in text
    assert f"{rest:,}" in text
    assert f"{100 / total:.1%}" in text


def test_types_table_cuts_a_long_type_name():
    text = render(types_table([{"type": "x" * 200, "events": 1}]), width=80)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" in text


def full_status(**changes: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "server": {
            "uri": "mongodb://app:****@db1.example.com:27017,db2.example.com:27017/?replicaSet=rs0",
            "kind": "mongodb",
            "product": "MongoDB",
            "version": "7.0.12",
            "topology": "replica set rs0 (3 members)",
            "atlas": False,
            "uptime_seconds": 3 * 86400 + 5,
        },
        "database": "shop",
        "now": NOW,
        "counts": {"estimated": False, "events": 30_000, "streams": 3_000, "sessions": 2_990},
        "types": [
            {"type": "login", "events": 12_000},
            {"type": "logout", "events": 11_000},
            {"type": "session.started", "events": 7_000},
        ],
        "oldest": {
            "_id": "a",
            "stream": "alice",
            "version": 1,
            "type": "session.started",
            "ts": NOW - timedelta(hours=6),
        },
        "newest": {
            "_id": "z",
            "stream": "bob",
            "version": 7,
            "type": "logout",
            "ts": NOW - timedelta(seconds=30),
        },
        "projection": {
            "available": True,
            "last_run_at": NOW - timedelta(minutes=5),
            "mode": "incremental",
            "lag": 120,
        },
        "checkpoints": {
            "available": True,
            "items": [
                {
                    "name": "audit-trail",
                    "collection": "events",
                    "updated_at": NOW - timedelta(minutes=3),
                    "position_ts": NOW - timedelta(minutes=4),
                    "behind": 12,
                },
                {
                    "name": "mailer",
                    "collection": "sessions",
                    "updated_at": NOW - timedelta(seconds=1),
                    "position_ts": NOW - timedelta(seconds=30),
                    "behind": 0,
                },
            ],
        },
        "activity": activity([3, 0, 7, 12, 40, 22, 9, 1] * 4),
    }
    status.update(changes)
    return status


@pytest.mark.parametrize("width", [80, 100, 160])
def test_status_view_fits_the_terminal_and_shows_every_part(width):
    text = render(status_view(full_status(), tz=UTC), width=width)
    lines = text.splitlines()
    # Everything fits but the URI, which is never folded (it stays whole when copied).
    assert all(len(line) <= width for line in lines if "mongodb://" not in line)
    for expected in (
        "MongoDB 7.0.12 · replica set rs0 (3 members) · up 3 days",
        "mongodb://app:****@db1.example.com",
        "shop",
        "30,000 events in 3,000 streams · 2,990 sessions",
        "2026-03-14 06:00:00 (6 h ago)  session.started alice@1",
        "2026-03-14 11:59:30 (30 s ago)  logout bob@7",
        "rebuilt 5 min ago (incremental) · 120 events behind the log",
        "2 saved",
        "peak 40",
        "Events by type",
        "session.started",
        "40.0%",
        "audit-trail",
        "12 events",
        "caught up",
    ):
        assert expected in text, (expected, text)
    chart = [line for line in lines if "█" in line and "%" not in line]
    assert chart, text


def test_status_view_of_an_empty_database_says_how_to_start():
    status = full_status(
        counts={"estimated": False, "events": 0, "streams": 0, "sessions": 0},
        types=[],
        oldest=None,
        newest=None,
        activity=None,
        projection={"available": True, "last_run_at": None, "mode": None, "lag": 0},
        checkpoints={"available": True, "items": []},
    )
    text = render(status_view(status, tz=UTC))
    assert "none yet · try `evstream seed` or `evstream publish`" in text
    assert "never rebuilt · run `evstream rebuild-sessions`" in text
    assert "none saved" in text
    assert "Oldest" not in text and "Events by type" not in text and "Activity" not in text


def test_status_view_labels_estimates():
    status = full_status(
        counts={"estimated": True, "events": 30_000, "streams": None, "sessions": 2_990},
        types=None,
    )
    text = render(status_view(status, tz=UTC), width=120)
    assert "~30,000 events · ~2,990 sessions (estimated from collection metadata)" in text
    assert "Events by type" not in text


def test_status_view_when_projection_and_checkpoints_are_unknown():
    missing = {"available": False, "error": "evstream.projection.projection_status is missing"}
    status = full_status(projection=missing, checkpoints={"available": False, "error": "boom"})
    text = render(status_view(status, tz=UTC), width=120)
    assert "unknown (evstream.projection.projection_status is missing)" in text
    assert "unknown (boom)" in text


def test_status_view_embedded_server():
    server = {
        "uri": "mongodb://127.0.0.1:40123/?directConnection=true",
        "kind": "embedded",
        "product": "nx-27017",
        "version": "0.8.1",
        "pid": 4242,
        "data_dir": "/home/me/.local/share/evstream/data",
        "data_bytes": 3 * 1024 * 1024,
    }
    text = render(status_view(full_status(server=server), tz=UTC))
    assert "embedded dev store · nx-27017 0.8.1 · pid 4242" in text
    assert "data in /home/me/.local/share/evstream/data (3.0 MB)" in text


def test_status_view_colours_only_when_asked():
    plain = render(status_view(full_status(), tz=UTC), color=False)
    coloured = render(status_view(full_status(), tz=UTC), color=True)
    assert "\x1b[" not in plain
    assert "\x1b[" in coloured


def server_info(**changes: Any) -> dict[str, Any]:
    info = {
        "running": True,
        "pid": 4242,
        "port": 40123,
        "uri": "mongodb://127.0.0.1:40123/?directConnection=true",
        "started_at": NOW - timedelta(minutes=90),
        "home": "/home/me/.local/share/evstream",
        "data_dir": "/home/me/.local/share/evstream/data",
        "data_bytes": 5 * 1024 * 1024,
        "databases": [
            {"name": "admin", "bytes": 4096},
            {"name": "evstream", "bytes": 5 * 1024 * 1024 - 4096},
        ],
        "log_file": "/home/me/.local/share/evstream/server.log",
        "log_bytes": 2048,
        "version": "0.8.1",
    }
    info.update(changes)
    return info


@pytest.mark.parametrize("width", [80, 120])
def test_server_view_running(width):
    text = render(server_view(server_info(), now=NOW), width=width)
    assert all(len(line) <= width for line in text.splitlines())
    assert "running · nx-27017 0.8.1 · pid 4242 · up 1 h" in text
    assert "mongodb://127.0.0.1:40123/?directConnection=true" in text
    assert "/home/me/.local/share/evstream/data · 5.0 MB" in text
    assert "evstream" in text and "5.0 MB" in text and "4.0 KB" in text
    assert "/home/me/.local/share/evstream/server.log · 2.0 KB" in text


def test_server_view_not_running_with_a_stale_record():
    info = server_info(running=False, pid=None, port=None, uri=None, stale_pid=99)
    text = render(server_view(info, now=NOW))
    assert "not running · starts by itself when a command needs it" in text
    assert "stale record of pid 99" in text
    assert "mongodb://" not in text


# --- the parts other modules report ---------------------------------------------------------------


def test_missing_projection_and_watching_modules_are_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "evstream.projection", None)  # import fails
    monkeypatch.setitem(sys.modules, "evstream.watching", pytypes.ModuleType("w"))  # no function
    assert overview.projection_info(object()) == {  # type: ignore[arg-type]
        "available": False,
        "error": "evstream.projection.projection_status is not available",
    }
    assert overview.checkpoints_info(object())["available"] is False  # type: ignore[arg-type]


def test_a_failing_projection_status_is_reported(monkeypatch):
    module = pytypes.ModuleType("evstream.projection")

    def projection_status(store: Any) -> dict[str, Any]:
        raise RuntimeError("no sessions metadata")

    module.projection_status = projection_status  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "evstream.projection", module)
    info = overview.projection_info(object())  # type: ignore[arg-type]
    assert info == {"available": False, "error": "RuntimeError: no sessions metadata"}


def test_projection_and_checkpoints_are_passed_through(monkeypatch):
    projection = pytypes.ModuleType("evstream.projection")
    projection.projection_status = lambda store: {  # type: ignore[attr-defined]
        "last_run_at": NOW,
        "mode": "full",
        "lag": 0,
    }
    watching = pytypes.ModuleType("evstream.watching")
    watching.list_checkpoints = lambda store: [{"name": "a", "behind": 3}]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "evstream.projection", projection)
    monkeypatch.setitem(sys.modules, "evstream.watching", watching)
    assert overview.projection_info(object()) == {  # type: ignore[arg-type]
        "available": True,
        "last_run_at": NOW,
        "mode": "full",
        "lag": 0,
    }
    assert overview.checkpoints_info(object()) == {  # type: ignore[arg-type]
        "available": True,
        "items": [{"name": "a", "behind": 3}],
    }


# --- the command against a server ----------------------------------------------------------------


def stored_events(now: datetime) -> list[dict[str, Any]]:
    """Events as `publish` stores them, spread over the last two hours."""
    docs = []
    kinds = ["login", "login", "logout", "profile.updated"]
    for i in range(40):
        stream = f"user{i % 5}"
        docs.append(
            {
                "_id": f"ev-{i:03d}",
                "stream": stream,
                "version": i // 5 + 1,
                "type": kinds[i % 4],
                "data": {"n": i},
                "ts": (now - timedelta(minutes=120 - 3 * i)).replace(microsecond=0),
            }
        )
    return docs


def test_status_json_reports_counts_types_edges_and_activity(cli, db):
    now = datetime.now(UTC)
    docs = stored_events(now)
    db.events.insert_many(docs)
    db.sessions.insert_many([{"_id": f"user{i}"} for i in range(3)])
    r = cli("status", "-o", "json")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1  # one JSON object
    status = json.loads(lines[0])
    assert status["database"] == cli.db
    assert status["counts"] == {"estimated": False, "events": 40, "streams": 5, "sessions": 3}
    assert status["types"] == [
        {"type": "login", "events": 20},
        {"type": "logout", "events": 10},
        {"type": "profile.updated", "events": 10},
    ]
    assert status["oldest"]["_id"] == "ev-000"
    assert status["newest"]["_id"] == "ev-039"
    assert "data" not in status["newest"]  # payloads can be large: left out
    assert sum(status["activity"]["counts"]) == 40
    assert len(status["activity"]["counts"]) <= 48
    assert status["server"]["kind"] == "mongodb"
    assert status["server"]["uri"] == cli.uri
    assert isinstance(status["projection"]["available"], bool)
    assert isinstance(status["checkpoints"]["available"], bool)


def test_status_estimate_uses_metadata(cli, db):
    db.events.insert_many(stored_events(datetime.now(UTC)))
    r = cli("status", "--estimate", "-o", "json")
    assert r.exit_code == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["counts"]["estimated"] is True
    assert status["counts"]["events"] == 40
    assert status["counts"]["streams"] is None
    assert status["types"] is None


def test_status_of_an_empty_database(cli, db):
    r = cli("status", "-o", "json")
    assert r.exit_code == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["counts"]["events"] == 0
    assert status["oldest"] is None and status["activity"] is None
    r = cli("status", "-o", "pretty")
    assert r.exit_code == 0, r.stderr
    assert "none yet" in r.stdout


def test_status_pretty(cli, db):
    db.events.insert_many(stored_events(datetime.now(UTC)))
    r = cli("status", "-o", "pretty", "--verbose")
    assert r.exit_code == 0, r.stderr
    assert "40 events in 5 streams" in r.stdout
    assert "Events by type" in r.stdout
    assert "peak" in r.stdout
    assert "using MongoDB at" in r.stderr and "using MongoDB at" not in r.stdout


def test_activity_counts_agree_with_the_log(cli, db):
    """The bucket query (or nx-27017's workaround) counts each event in exactly one bucket."""
    from evstream.settings import Settings
    from evstream.storage import connect

    now = datetime.now(UTC).replace(microsecond=0)
    docs = stored_events(now)
    db.events.insert_many(docs)
    store = connect(Settings(uri=cli.uri, db=cli.db), lambda message: None)
    try:
        plan = BucketPlan(now - timedelta(minutes=120), timedelta(minutes=30), 4)
        counts = store.bucket_counts(store.events, "ts", plan.boundaries())
    finally:
        store.close()
    edges = plan.boundaries()
    expected = [sum(1 for d in docs if edges[i] <= d["ts"] < edges[i + 1]) for i in range(4)]
    assert counts == expected
    assert sum(counts) == 40


def test_status_lists_every_projection_with_its_lag(cli, tmp_path):
    """Projections other than sessions, and their parts, each with collection, version and lag."""
    from pathlib import Path

    carts = str(Path(__file__).parent / "projections" / "carts.py")
    for i in range(3):
        r = cli("publish", "cart.created", "-s", f"cart{i}", "-o", "json")
        assert r.exit_code == 0, r.stderr
    assert cli("rebuild", "carts", "--module", carts, "-o", "json").exit_code == 0
    assert cli("rebuild-sessions", "-o", "json").exit_code == 0
    assert cli("publish", "cart.created", "-s", "cart9", "-o", "json").exit_code == 0
    status = json.loads(cli("status", "-o", "json").stdout)
    rows = {row["checkpoint"]: row for row in status["projections"]["items"]}
    assert set(rows) == {"carts", "sessions"}
    assert rows["carts"]["collection"] == "carts" and rows["carts"]["lag"] == 1
    assert rows["carts"]["mode"] == "full" and rows["carts"]["version"] is not None
    pretty = cli("status", "-o", "pretty", COLUMNS="120")
    assert "Projections" in pretty.stdout and "carts" in pretty.stdout
