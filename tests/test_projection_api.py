"""The public projection API (evstream.projections), the stable partition hash, and the rebuild
summary's rendering: pure functions, no server."""

from __future__ import annotations

import io
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from evstream.errors import InvalidInput
from evstream.events import parse_partition, partition_of
from evstream.projection import checkpoint_key
from evstream.projections import HandlerFailed, Projection, known_projections, load_projection

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
HERE = Path(__file__).parent / "projections"


def counter() -> Projection:
    p = Projection(name="tags", collection="tags", version=1, types=["tag"], initial={"tags": []})

    @p.on("tag")
    def _(state: dict[str, Any], event: dict[str, Any]) -> None:
        state["tags"].append(event["data"]["t"])

    return p


def ev(version: int, t: str = "x", kind: str = "tag") -> dict[str, Any]:
    return {"_id": f"e{version}", "stream": "s", "version": version, "type": kind, "ts": T,
            "data": {"t": t}}  # fmt: skip


def test_fold_counts_versions_and_never_shares_the_initial_state():
    p = counter()
    one = p.fold([ev(1, "a"), ev(2, "b")])
    two = p.fold([ev(1, "c")])
    assert one == {"tags": ["a", "b"], "version": 2, "updated_at": T, "events": 2}
    assert two["tags"] == ["c"] and p.initial == {"tags": []}


def test_fold_continues_a_stored_state_without_changing_it():
    p = counter()
    stored = {"_id": "s", **p.fold([ev(1, "a")])}
    more = p.fold([ev(1, "a"), ev(2, "b")], stored)  # v1 is already applied
    assert more["tags"] == ["a", "b"] and more["events"] == 2 and "_id" not in more
    assert stored["tags"] == ["a"]
    assert p.is_state(stored)


@pytest.mark.parametrize(
    "doc",
    [
        {"_id": "s", "version": 1},
        {"_id": "s", "tags": [], "version": "1", "updated_at": T, "events": 1},
        {"_id": "s", "tags": [], "version": 1, "updated_at": T, "events": 1, "extra": 1},
        {"_id": "s", "tags": [], "version": 1, "updated_at": T},
    ],
)
def test_a_document_of_another_shape_is_not_a_state(doc):
    assert not counter().is_state(doc)


def test_a_raising_handler_names_the_projection_and_the_event():
    p = counter()
    bad = {**ev(3), "data": {}}
    with pytest.raises(HandlerFailed) as caught:
        p.fold([ev(1), ev(2), bad])
    line = caught.value.line()
    for part in ("'tags'", "'tag' handler", "'e3'", "stream 's'", "version 3", "KeyError: 't'"):
        assert part in line, (part, line)
    assert isinstance(caught.value.__cause__, KeyError)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": ""}, "name"),
        ({"collection": "events"}, "cannot be its collection"),
        ({"collection": "evstream_projections"}, "cannot be its collection"),
        ({"version": 0}, "version"),
        ({"types": []}, "types"),
        ({"types": ["ok", 3]}, "types"),
        ({"initial": {"version": 1}}, "initial cannot hold version"),
        ({"initial": {"_id": 1}}, "initial cannot hold _id"),
    ],
)
def test_a_bad_spec_is_refused(kwargs, needle):
    spec: dict[str, Any] = {
        "name": "p",
        "collection": "p",
        "version": 1,
        "types": ["t"],
        "initial": {},
    }
    with pytest.raises(InvalidInput, match=needle):
        Projection(**{**spec, **kwargs})


def test_a_handler_for_an_undeclared_type_is_refused():
    with pytest.raises(InvalidInput, match="not one of its types"):
        counter().on("other")


def test_loading_by_file_and_refusing_duplicates(monkeypatch):
    monkeypatch.delenv("EVSTREAM_PROJECTIONS", raising=False)
    carts = load_projection("carts", str(HERE / "carts.py"))
    assert (carts.name, carts.collection, carts.version) == ("carts", "carts", 1)
    assert load_projection("sessions").name == "sessions"
    with pytest.raises(InvalidInput, match="two projections have the name 'carts'"):
        known_projections([str(HERE / "carts.py"), str(HERE / "other_carts.py")])
    with pytest.raises(InvalidInput, match=r"it defines: carts"):
        load_projection("nope", str(HERE / "carts.py"))


# --- partitions ----------------------------------------------------------------------------------


def test_partition_of_is_the_documented_stable_hash():
    import hashlib

    for stream in ["alice", "bob", "日本", "", "a" * 300]:
        digest = hashlib.sha1(stream.encode()).digest()
        for parts in (1, 2, 3, 7, 64):
            assert partition_of(stream, parts) == int.from_bytes(digest[:8], "big") % parts + 1
    # Fixed values: the same in every process and on every machine (hash() is salted).
    assert [partition_of(s, 4) for s in ("alice", "bob", "carol")] == [2, 3, 3]


def test_partition_of_spreads_streams_evenly():
    spread = Counter(partition_of(f"user-{i:05d}", 4) for i in range(4000))
    assert set(spread) == {1, 2, 3, 4} and min(spread.values()) > 900


@pytest.mark.parametrize(
    ("text", "parsed"), [(None, None), ("1/1", None), ("2/4", (2, 4)), ("4/4", (4, 4))]
)
def test_parse_partition(text, parsed):
    assert parse_partition(text) == parsed


@pytest.mark.parametrize("text", ["0/4", "5/4", "a/b", "2", "/4", "1/0", "-1/2"])
def test_a_bad_partition_is_refused(text):
    with pytest.raises(InvalidInput, match="--partition"):
        parse_partition(text)


def test_each_part_keeps_its_own_checkpoint():
    p = counter()
    assert checkpoint_key(p, None) == "tags" and checkpoint_key(p, (2, 4)) == "tags part 2 of 4"


# --- the summary ---------------------------------------------------------------------------------


def render(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_summary_names_the_projection_its_part_and_what_it_skipped():
    from evstream.output import rebuild_summary_text

    summary = {
        "projection": "carts", "collection": "carts", "partition": "2/4", "mode": "full",
        "dry_run": False, "streams": 3, "events": 10, "applied": 9, "written": 3, "created": 3,
        "updated": 0, "unchanged": 0, "removed": 1, "superseded": 0,
        "skipped": {"total": 1, "kinds": {"no stream": 1}, "sample_ids": ["x"]},
        "events_per_second": 100.0, "seconds": 0.1,
    }  # fmt: skip
    text = render(rebuild_summary_text(summary))
    assert "Rebuilt carts part 2 of 4 (full)" in text and "3 carts written" in text
    assert "1 skipped" in text
    dry = render(rebuild_summary_text({**summary, "dry_run": True}))
    assert "Dry run of carts part 2 of 4 (full), nothing written" in dry


@pytest.mark.parametrize("module", ["projection.py", "projections.py", "sessions.py"])
def test_the_engine_and_the_api_import_neither_the_driver_nor_bson(module):
    import ast

    source = (Path(__file__).parent.parent / "evstream" / module).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"pymongo", "bson", "rich", "typer"}, imported
    assert "is_nx27017" not in source and "product" not in source  # never asks which server
