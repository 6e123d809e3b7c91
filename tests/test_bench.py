"""`evstream bench`: each workload against its raw baseline, in scratch databases."""

from __future__ import annotations

import io
import json
from typing import Any

from rich.console import Console

from evstream.bench import BenchResult, median_result, percentile
from evstream.output import bench_table


def scratch_dbs(client: Any) -> list[str]:
    return [name for name in client.list_database_names() if name.startswith("evstream_bench_")]


def test_all_workloads_report_figures_and_leave_nothing_behind(cli: Any, client: Any) -> None:
    before = scratch_dbs(client)
    r = cli.run("bench", "all", "--events", "200", "--streams", "20", "-o", "json", timeout=300)
    assert r.returncode == 0, r.stderr
    # Where stderr is no terminal (a CI log), each step is a line of its own.
    steps = ["publish: raw insert_many", "rebuild: evstream rebuild-sessions", "watch: raw latency"]
    assert all(step in r.stderr for step in steps), r.stderr
    assert "kept" not in r.stderr and "dropped at the end" in r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["workload"] for row in rows] == ["publish", "rebuild", "watch", "exec"]
    for row in rows:
        assert row["events"] == 200
        assert row["evstream_seconds"] > 0 and row["raw_seconds"] > 0
        assert abs(row["ratio"] - row["evstream_seconds"] / row["raw_seconds"]) < 0.01
    assert rows[1]["streams"] == 20
    for row in rows:  # client CPU per event, both sides, and its ratio
        assert row["evstream_cpu_us_per_event"] > 0 and row["raw_cpu_us_per_event"] > 0
        expected = row["evstream_cpu_us_per_event"] / row["raw_cpu_us_per_event"]
        assert abs(row["cpu_ratio"] - expected) < 0.02 * expected + 0.01
    assert 0 < rows[2]["raw_p50_ms"] <= rows[2]["raw_p99_ms"]
    assert 0 < rows[2]["p50_ms"] <= rows[2]["p99_ms"]
    assert scratch_dbs(client) == before


def test_keep_keeps_the_scratch_database(cli: Any, client: Any) -> None:
    before = set(scratch_dbs(client))
    r = cli("bench", "publish", "--events", "150", "--streams", "10", "--keep", "-o", "json")
    assert r.exit_code == 0, r.stderr
    kept = set(scratch_dbs(client)) - before
    try:
        assert len(kept) == 2  # evstream's and the raw baseline's
        assert f"kept the scratch databases: {', '.join(sorted(kept))}" in r.stderr
        for name in kept:
            assert client[name].events.count_documents({}) == 150
        # The baseline does the same work: its inserts maintain the same indexes as the log's.
        evstream_db, raw_db = sorted(kept)
        assert raw_db.endswith("_publish_raw")
        indexes = [
            sorted(
                (tuple(spec["key"].items()), spec.get("unique", False))
                for spec in client[name].events.list_indexes()
            )
            for name in (evstream_db, raw_db)
        ]
        assert indexes[0] == indexes[1] and len(indexes[0]) == 3  # _id, stream+version, ts
    finally:
        for name in kept:
            client.drop_database(name)


def test_unknown_workload(cli: Any) -> None:
    r = cli("bench", "replay")
    assert (
        r.exit_code == 2
        and "'replay' is not one of 'publish', 'rebuild', 'watch', 'exec', 'all'" in r.stderr
    )


def test_median_of_rounds_and_percentiles() -> None:
    runs = [
        BenchResult("publish", 10, s, r, "raw") for s, r in ((3.0, 1.0), (1.0, 2.0), (2.0, 9.0))
    ]
    middle = median_result(runs)
    assert (middle.evstream_seconds, middle.raw_seconds, middle.extra) == (2.0, 2.0, {"rounds": 3})
    assert middle.ratio == 1.0 and middle.events_per_second == 5.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile(list(range(101)), 0.99) == 99


def test_table_fits_80_columns() -> None:
    results = [
        BenchResult("publish", 30_000, 4.1, 3.9, "insert_many, batches of 1,000"),
        BenchResult(
            "watch",
            30_000,
            3.2,
            3.0,
            "change-stream loop",
            {"p50_ms": 2.6, "p99_ms": 7.2, "raw_p50_ms": 2.3, "raw_p99_ms": 6.5},
        ),
    ]
    buffer = io.StringIO()
    Console(file=buffer, width=80, no_color=True).print(bench_table(results))
    text = buffer.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "1.05x" in text and "1.07x" in text
    assert (
        "watch: raw is change-stream loop; p50 2.60 ms (raw 2.30); p99 7.20 ms (raw 6.50)" in text
    )


def test_rounds_alternate_which_side_runs_first(server_uri: str, client: Any) -> None:
    from evstream.bench import run
    from evstream.settings import Settings

    before = scratch_dbs(client)
    said: list[str] = []
    results = run(
        Settings(uri=server_uri, db="unused"),
        ["publish", "rebuild"],
        events=60,
        streams=6,
        keep=False,
        progress=said.append,
        rounds=2,
    )
    assert [r.extra.get("rounds") for r in results] == [2, 2]

    def order(workload: str, round_no: int) -> list[str]:
        steps = [s for s in said if s.startswith(workload) and f"(round {round_no}/2)" in s]
        return ["evstream" if "evstream" in s else "raw" for s in steps if "writing" not in s]

    assert order("publish", 1) == ["raw", "evstream"]
    assert order("publish", 2) == ["evstream", "raw"]
    assert order("rebuild", 1) == ["raw", "evstream"]
    assert order("rebuild", 2) == ["evstream", "raw"]
    assert scratch_dbs(client) == before


def test_processes_time_both_sides_as_whole_processes(cli: Any, client: Any) -> None:
    before = scratch_dbs(client)
    r = cli.run(
        "bench", "publish", "--events", "300", "--streams", "30", "--processes", "-o", "json",
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["processes"] is True and row["events"] == 300
    assert "loader process" in row["raw"]
    # A whole process costs at least its interpreter's start: far more than 1 µs per event.
    assert row["evstream_cpu_us_per_event"] > 1 and row["raw_cpu_us_per_event"] > 1
    assert scratch_dbs(client) == before
