"""`evstream archive`, `erase` and `redact` through the CLI against a real server
(docs/lifecycle.md)."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import bson
import pytest
from lifecycle_log import cut, make_events, write_log
from waiting import wait_for

from evstream import archiving
from evstream.events import REDACTED
from evstream.storage import lifecycle

AWARE = bson.json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True)
PROJECTIONS = Path(__file__).parent / "projections"
CARTS = str(PROJECTIONS / "carts.py")
TALLY = str(PROJECTIONS / "tally.py")
DAILY = str(PROJECTIONS / "daily.py")


def out_json(result: Any) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, (result.stdout, result.stderr)
    return json.loads(lines[-1])


def seeded(cli: Any, tmp_path: Path, streams: int = 6, versions: int = 12) -> list[dict[str, Any]]:
    events = make_events(streams, versions)
    result = cli("publish", "--file", str(write_log(tmp_path / "log.ndjson", events)), "-o", "json")
    assert result.exit_code == 0, result.stderr
    return events


def rebuild_all(cli: Any, db: Any) -> dict[str, list[dict[str, Any]]]:
    """Full rebuilds of sessions and carts; their documents."""
    for args in (("rebuild", "sessions"), ("rebuild", "carts", "-m", CARTS)):
        result = cli(*args, "-o", "json")
        assert result.exit_code == 0, result.stderr
    return {name: list(db[name].find().sort("_id", 1)) for name in ("sessions", "carts")}


def archive_lines(path: Path) -> list[dict[str, Any]]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [bson.json_util.loads(line, json_options=AWARE) for line in handle if line.strip()]


# --- archive -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "streams_per_chunk, chunk_bytes, documents",
    [(1000, 8 << 20, 1), (2, 8 << 20, 3), (1000, 300, 6)],
    ids=["one-chunk", "chunks-of-2", "split-by-size"],
)
def test_archive_moves_old_events_to_a_verified_file_and_rebuilds_stay_equal(
    cli: Any,
    db: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    streams_per_chunk: int,
    chunk_bytes: int,
    documents: int,
) -> None:
    # The archived streams' records are stored in chunks; across chunks, split chunks and two
    # runs, every stream's snapshot is found.
    monkeypatch.setattr(lifecycle, "CHUNK_STREAMS", streams_per_chunk)
    monkeypatch.setattr(lifecycle, "CHUNK_BYTES", chunk_bytes)
    seeded(cli, tmp_path)
    original = {d["_id"]: d for d in db.events.find()}
    before = rebuild_all(cli, db)
    target = tmp_path / "old.ndjson.gz"

    preview = cli(
        "archive",
        "--before",
        cut(5, 6).isoformat(),
        "--to",
        str(target),
        "--dry-run",
        "-m",
        CARTS,
        "-o",
        "json",
    )
    assert preview.exit_code == 0, preview.stderr
    assert out_json(preview)["events"] == 6 * 4 and out_json(preview)["streams"] == 6
    assert not target.exists() and db.events.count_documents({}) == len(original)

    result = cli(
        "archive", "--before", cut(5, 6).isoformat(), "--to", str(target), "-m", CARTS, "-o", "json"
    )
    assert result.exit_code == 0, result.stderr
    report = out_json(result)
    assert report["events"] == report["deleted"] == 24
    assert sorted(report["snapshots"]) == ["carts", "sessions"]
    moved = archive_lines(target)
    assert {d["_id"] for d in moved} == {i for i, d in original.items() if d["version"] < 5}
    assert all(original[d["_id"]] == d for d in moved)  # exact copies
    assert db.events.count_documents({}) == len(original) - 24
    assert db.events.count_documents({"version": {"$lt": 5}}) == 0

    assert rebuild_all(cli, db) == before  # full rebuilds give what they gave before
    records = list(db.evstream_archived_streams.find())
    assert sorted(s for r in records for s in r["streams"]) == sorted({d["stream"] for d in moved})
    assert len(records) == documents

    check = cli("check", "-o", "json")
    assert check.exit_code == 0, check.stdout  # archived versions are not gaps
    starts = out_json(check)["log_starts"]
    assert starts["archives"] == 1 and starts["archived_events"] == 24
    status = cli("status", "-o", "json")
    assert out_json(status)["log_starts"]["archived_events"] == 24

    # A second archive, later: the rebuilds still equal the first ones.
    second = tmp_path / "older.ndjson"
    result = cli("archive", "--before", cut(9, 6).isoformat(), "--to", str(second), "-m", CARTS)
    assert result.exit_code == 0, result.stderr
    assert len(archive_lines(second)) == 24
    assert rebuild_all(cli, db) == before

    # Restored into the log it came from: exact, and nothing already there changes.
    for path in (target, second):
        restored = cli("publish", "--file", str(path), "-o", "json")
        assert restored.exit_code == 0, restored.stderr
    assert {d["_id"]: d for d in db.events.find()} == original
    assert cli("check", "-o", "json").exit_code == 0
    assert rebuild_all(cli, db) == before


def test_archive_restores_into_another_database(
    cli: Any, db: Any, client: Any, tmp_path: Path
) -> None:
    seeded(cli, tmp_path, streams=3, versions=6)
    original = {d["_id"]: d for d in db.events.find({"version": {"$lt": 3}})}
    target = tmp_path / "a.ndjson"
    assert cli("archive", "--before", cut(3, 3).isoformat(), "--to", str(target)).exit_code == 0
    other = cli.db + "_copy"
    try:
        result = cli("publish", "--file", str(target), "-o", "json", EVSTREAM_DB=other)
        assert result.exit_code == 0, result.stderr
        assert {d["_id"]: d for d in client[other].events.find()} == original
    finally:
        client.drop_database(other)


def test_archive_keeps_each_stream_in_version_order(cli: Any, db: Any, tmp_path: Path) -> None:
    events = make_events(2, 4)
    # user-00001's version 2 is older than the cut, its version 1 is not: neither moves, nor
    # anything after them, so the stream still starts at its version 1.
    late = cut(9, 2).isoformat().replace("+00:00", "Z")
    events[4]["ts"] = {"$date": late}
    write_log(tmp_path / "log.ndjson", events)
    assert cli("publish", "--file", str(tmp_path / "log.ndjson")).exit_code == 0
    result = cli(
        "archive",
        "--before",
        cut(3, 2).isoformat(),
        "--to",
        str(tmp_path / "a.ndjson"),
        "-o",
        "json",
    )
    report = out_json(result)
    assert report["events"] == 2 and report["held_back"] == 1
    assert db.events.count_documents({"stream": "user-00001"}) == 4
    kinds = [f["kind"] for f in out_json(cli("check", "-o", "json"))["findings"]]
    assert "version gap" not in kinds


def test_a_projection_unknown_at_the_archive_is_refused_until_it_is_restored(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    seeded(cli, tmp_path, streams=3, versions=6)
    target = tmp_path / "a.ndjson.gz"
    assert cli("archive", "--before", cut(3, 3).isoformat(), "--to", str(target)).exit_code == 0
    result = cli("rebuild", "tally", "-m", TALLY)
    assert result.exit_code == 4
    assert str(target) in result.stderr and "restore" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert cli("publish", "--file", str(target)).exit_code == 0
    assert cli("rebuild", "tally", "-m", TALLY).exit_code == 0


def test_a_keyed_projection_rebuilds_after_an_archive_as_before(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    """Its state of each key at the archive's edge is kept (tests/test_lifecycle_keyed.py has
    more: several keys and tenants, a second archive, incremental, partitions, erase)."""
    seeded(cli, tmp_path, streams=3, versions=6)
    assert cli("rebuild", "daily_logins", "-m", DAILY).exit_code == 0
    before = list(db.daily_logins.find().sort("_id", 1))
    assert before and sum(d["logins"] for d in before) == 3
    target = tmp_path / "a.ndjson.gz"
    archived = cli("archive", "--before", cut(3, 3).isoformat(), "--to", str(target), "-m", DAILY)
    assert archived.exit_code == 0, archived.stderr
    assert db.events.count_documents({"type": "login"}) == 0  # every login was archived
    assert cli("rebuild", "daily_logins", "-m", DAILY).exit_code == 0
    assert list(db.daily_logins.find().sort("_id", 1)) == before
    assert cli("publish", "--file", str(target)).exit_code == 0
    assert cli("rebuild", "daily_logins", "-m", DAILY).exit_code == 0
    assert list(db.daily_logins.find().sort("_id", 1)) == before


def test_archive_refuses_while_a_rebuilt_projection_is_not_loaded(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    seeded(cli, tmp_path, streams=2, versions=6)
    assert cli("rebuild", "carts", "-m", CARTS).exit_code == 0
    result = cli("archive", "--before", cut(3, 2).isoformat(), "--to", str(tmp_path / "a"))
    assert result.exit_code == 2 and "carts" in result.stderr and "--module" in result.stderr
    assert db.events.count_documents({}) == 12 and not (tmp_path / "a").exists()


def test_an_interrupted_archive_is_finished_by_the_same_command_and_blocks_others(
    cli: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(cli, tmp_path, streams=4, versions=6)
    original = {d["_id"]: d for d in db.events.find()}
    target = tmp_path / "a.ndjson"
    args = ("archive", "--before", cut(4, 4).isoformat(), "--to", str(target))

    def boom(*a: Any, **k: Any) -> int:
        raise RuntimeError("killed")

    monkeypatch.setattr(lifecycle, "delete_events_by_id", boom)
    assert cli(*args).exit_code == 1
    monkeypatch.undo()
    assert db.events.count_documents({}) == len(original)  # nothing deleted yet

    other = cli("archive", "--before", cut(2, 4).isoformat(), "--to", str(tmp_path / "b"))
    assert other.exit_code == 5
    assert "unfinished" in other.stderr and str(target) in other.stderr
    check = cli("check", "-o", "json")
    assert check.exit_code == 7 and "unfinished archive" in check.stdout

    result = cli(*args, "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert out_json(result)["resumed"] is True
    in_file = archive_lines(target)
    in_log = list(db.events.find())
    assert sorted(d["_id"] for d in in_file + in_log) == sorted(original)
    assert cli("check").exit_code == 0


@pytest.mark.parametrize("state", ["written", "deleting"])
def test_a_run_recorded_by_the_first_layout_is_finished(
    cli: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    # A run interrupted under the first layout (ids hashed, one record per stream stored at
    # `written`) is finished by this one: the same file, nothing lost, rebuilds unchanged.
    seeded(cli, tmp_path, streams=4, versions=6)
    original = {d["_id"]: d for d in db.events.find()}
    before = rebuild_all(cli, db)
    target = tmp_path / "a.ndjson"
    args = ("archive", "--before", cut(4, 4).isoformat(), "--to", str(target), "-m", CARTS)

    def boom(*a: Any, **k: Any) -> int:
        raise RuntimeError("killed")

    monkeypatch.setattr(lifecycle, "delete_events_by_id", boom)
    assert cli(*args).exit_code == 1
    monkeypatch.undo()
    run = db.evstream_archives.find_one()
    ids = [d["_id"] for d in archive_lines(target)]
    digest = hashlib.sha256(b"".join(archiving._id_text(i) for i in ids)).hexdigest()
    del run["sha256"], run["records"]
    run.update(state=state, ids_sha256=digest)
    db.evstream_archives.replace_one({"_id": run["_id"]}, run)
    if state == "written":  # records of the first layout were not stored yet
        db.evstream_archived_streams.delete_many({})

    result = cli(*args, "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert [d["_id"] for d in archive_lines(target)] == ids
    in_log = list(db.events.find())
    assert sorted(ids + [d["_id"] for d in in_log]) == sorted(original)
    assert rebuild_all(cli, db) == before


def test_archive_refuses_an_existing_file_and_bad_times(cli: Any, db: Any, tmp_path: Path) -> None:
    seeded(cli, tmp_path, streams=1, versions=3)
    (tmp_path / "taken").write_text("x")
    result = cli("archive", "--before", "1d", "--to", str(tmp_path / "taken"))
    assert result.exit_code == 2 and "exists" in result.stderr
    result = cli("archive", "--before", "soon", "--to", str(tmp_path / "new"))
    assert result.exit_code == 2 and "--before" in result.stderr
    assert db.events.count_documents({}) == 3


# --- erase ---------------------------------------------------------------------------------------


def holds(value: Any, needles: tuple[str, ...]) -> bool:
    """Whether a document holds any needle, in a key or a value, at any depth; binary values
    are searched as bytes, and inside when they are zlib-compressed BSON (archive records)."""
    if isinstance(value, bytes):
        try:
            inner = bson.decode(zlib.decompress(value))
        except (zlib.error, bson.errors.BSONError):
            return any(n.encode() in value for n in needles)
        return holds(inner, needles)
    if isinstance(value, dict):
        return any(holds(k, needles) or holds(v, needles) for k, v in value.items())
    if isinstance(value, list):
        return any(holds(v, needles) for v in value)
    return isinstance(value, str) and any(n in value for n in needles)


def test_erase_removes_the_stream_everywhere_and_refuses_it_later(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    seeded(cli, tmp_path, streams=3, versions=8)
    name = "user-00001"
    target = tmp_path / "a.ndjson"
    assert (
        cli(
            "archive",
            "--before",
            cut(3, 3).isoformat(),
            "--to",
            str(target),
            "--stream",
            name,
            "-m",
            CARTS,
        ).exit_code
        == 0
    )
    assert cli("rebuild", "carts", "-m", CARTS).exit_code == 0
    assert cli("rebuild", "sessions").exit_code == 0
    watch = cli("watch", "--from", "start", "--no-follow", "--checkpoint", "c1", "-o", "json")
    assert watch.exit_code == 0, watch.stderr
    some_id = db.events.find_one({"stream": name})["_id"]
    db.evstream_dead_letters.insert_one(
        {"checkpoint": "h", "change_id": some_id, "change": {"_id": some_id, "stream": name}}
    )
    needles = (name, "N1")  # the name, and its data (session.started's name)
    assert any(holds(d, needles) for c in db.list_collection_names() for d in db[c].find())

    refused = cli("erase", name)  # not a terminal, no --yes
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    result = cli("erase", name, "--yes", "-o", "json")
    assert result.exit_code == 0, result.stderr
    report = out_json(result)["streams"][0]
    assert report["removed"]["events"] == 6 and report["removed"]["sessions"] == 1
    assert report["removed"]["evstream_dead_letters"] == 1
    assert report["archive_files"] == [str(target)]
    assert str(target) in result.stderr

    for collection in db.list_collection_names():
        for doc in db[collection].find():
            assert not holds(doc, needles), (collection, doc)

    publish = cli("publish", "login", "-s", name)
    assert publish.exit_code == 5 and "erased" in publish.stderr
    assert len(publish.stderr.strip().splitlines()) == 1
    lines = json.dumps({"type": "login", "stream": name}) + "\n"
    assert cli("publish", "--file", "-", input=lines).exit_code == 5
    assert db.events.count_documents({"stream": name}) == 0
    assert cli("publish", "login", "-s", name, "--allow-erased").exit_code == 0
    assert cli("publish", "login", "-s", "user-00002").exit_code == 0  # others are not refused


def test_erase_takes_the_stream_out_of_shared_archive_records(
    cli: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Archived streams' records are shared, a chunk of streams to a document: erase takes the
    # one stream out of them, and the others' snapshots still give the same rebuilds.
    monkeypatch.setattr(lifecycle, "CHUNK_STREAMS", 4)
    seeded(cli, tmp_path)
    name = "user-00002"
    assert cli("rebuild", "sessions").exit_code == 0
    before = {d["_id"]: d for d in db.sessions.find() if d["_id"] != name}
    target = tmp_path / "a.ndjson"
    assert cli("archive", "--before", cut(5, 6).isoformat(), "--to", str(target)).exit_code == 0
    assert db.evstream_archived_streams.count_documents({}) == 2
    result = cli("erase", name, "--yes", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert out_json(result)["streams"][0]["removed"]["evstream_archived_streams"] == 1
    for collection in db.list_collection_names():
        for doc in db[collection].find():
            assert not holds(doc, (name, "N2")), (collection, doc)
    after = cli("rebuild", "sessions", "-o", "json")
    assert after.exit_code == 0, after.stderr
    assert {d["_id"]: d for d in db.sessions.find()} == before


def test_an_interrupted_erase_is_finished_by_running_it_again(
    cli: Any, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(cli, tmp_path, streams=2, versions=4)
    assert cli("rebuild", "sessions").exit_code == 0

    def boom(*a: Any, **k: Any) -> int:
        raise RuntimeError("killed")

    monkeypatch.setattr(lifecycle, "delete_stream_events", boom)
    assert cli("erase", "user-00000", "--yes").exit_code == 1
    monkeypatch.undo()
    assert cli("publish", "login", "-s", "user-00000").exit_code == 5  # the tombstone is first
    result = cli("erase", "user-00000", "--yes", "-o", "json")
    assert result.exit_code == 0
    assert out_json(result)["streams"][0]["resumed"] is True
    assert db.events.count_documents({"stream": "user-00000"}) == 0
    assert db.sessions.count_documents({"_id": "user-00000"}) == 0
    tombstone = db.evstream_tombstones.find_one()
    assert tombstone["state"] == "erased" and "user-00000" not in json.dumps(tombstone, default=str)


# --- redact --------------------------------------------------------------------------------------


def mask(doc: dict[str, Any], path: str) -> None:
    """Set a dotted path (list indices as [i]) of a document to the marker."""
    parts = path.replace("[", ".[").split(".")
    target: Any = doc
    for part in parts[:-1]:
        target = target[int(part[1:-1])] if part.startswith("[") else target[part]
    last = parts[-1]
    if last.startswith("["):
        target[int(last[1:-1])] = REDACTED
    else:
        target[last] = REDACTED


def test_redact_changes_only_the_secret_values(cli: Any, db: Any, tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from bson.int64 import Int64
    from bson.objectid import ObjectId

    ts = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
    docs = [
        {
            "_id": "a1",
            "stream": "alice",
            "version": 1,
            "type": "signup",
            "data": {
                "password": "hunter2",
                "card": {"number": "4111", "exp": "12/30"},
                "n": Int64(7),
                "at": ts,
                "tags": [{"token": "t1"}, {"ok": 1}],
            },
            "meta": {"apiKey": "k"},
            "ts": ts,
            "__v": 0,
        },
        {
            "_id": ObjectId(),
            "stream": "bob",
            "version": 1,
            "type": "signup",
            "data": {"ssn": "123", "plain": "x"},
            "ts": ts,
        },
        {
            "_id": "c1",
            "stream": "carol",
            "version": 1,
            "type": "login",
            "data": {"ok": True},
            "ts": ts,
        },
        {
            "_id": "d1",
            "stream": "dave",
            "version": 1,
            "type": "signup",
            "data": {"password": "p"},
            "ts": ts,
        },
    ]
    db.events.insert_many(docs)
    before = {d["_id"]: d for d in db.events.find()}
    assert cli("rebuild", "sessions").exit_code == 0

    dry = cli("redact", "--keys", "SSN", "--path", "data.card.number", "--dry-run", "-o", "json")
    assert dry.exit_code == 0 and out_json(dry)["changed"] == 3
    assert {d["_id"]: d for d in db.events.find()} == before

    result = cli(
        "redact",
        "--keys",
        "SSN",
        "--path",
        "data.card.number",
        "--stream",
        "alice",
        "--stream",
        "bob",
        "-o",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    report = out_json(result)
    assert report["changed"] == 2 and report["fields"] == 5
    assert report["rebuild"] == ["sessions"]
    replaced = {
        "a1": ["data.password", "data.card.number", "data.tags[0].token", "meta.apiKey"],
        docs[1]["_id"]: ["data.ssn"],
    }
    after = {d["_id"]: d for d in db.events.find()}
    for ident, doc in before.items():
        expected = bson.decode(bson.encode(doc))
        for path in replaced.get(ident, []):
            mask(expected, path)
        assert bson.encode(after[ident]) == bson.encode(expected), ident
    assert after["d1"]["data"]["password"] == "p"  # not in --stream

    again = cli("redact", "--keys", "SSN", "--path", "data.card.number", "-o", "json")
    assert out_json(again)["changed"] == 1  # dave's, now that no stream is given
    final = {d["_id"]: bson.encode(d) for d in db.events.find()}
    assert (
        out_json(cli("redact", "--keys", "SSN", "--path", "data.card.number", "-o", "json"))[
            "changed"
        ]
        == 0
    )
    assert {d["_id"]: bson.encode(d) for d in db.events.find()} == final  # idempotent


@pytest.mark.parametrize("path", ["card.number", "data.", "ts", "data..x"])
def test_redact_refuses_a_path_outside_data_and_meta(cli: Any, db: Any, path: str) -> None:
    result = cli("redact", "--path", path)
    assert result.exit_code == 2 and "--path" in result.stderr


def test_incremental_and_partitioned_rebuilds_after_an_archive_equal_a_full_one(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    seeded(cli, tmp_path, streams=4, versions=8)
    assert cli("rebuild", "sessions").exit_code == 0
    assert cli("rebuild", "carts", "-m", CARTS).exit_code == 0
    # One stream archived whole (its documents live on in the snapshots), the rest in part.
    whole = cli(
        "archive",
        "--before",
        cut(99, 4).isoformat(),
        "--stream",
        "user-00000",
        "--to",
        str(tmp_path / "whole.ndjson"),
        "-m",
        CARTS,
    )
    assert whole.exit_code == 0, whole.stderr
    assert db.events.count_documents({"stream": "user-00000"}) == 0
    part = cli(
        "archive",
        "--before",
        cut(4, 4).isoformat(),
        "--to",
        str(tmp_path / "part.ndjson"),
        "-m",
        CARTS,
    )
    assert part.exit_code == 0, part.stderr
    more = [
        {"type": "cart.item_added", "stream": "user-00001", "data": {"sku": "x", "price": 5}},
        {"type": "login", "stream": "user-00009", "data": {"username": "new"}},
    ]
    cli("publish", "--file", "-", input="".join(json.dumps(e) + "\n" for e in more))
    for args in (("sessions",), ("carts", "-m", CARTS)):
        assert cli("rebuild", *args, "--incremental").exit_code == 0
    incremental = {n: list(db[n].find().sort("_id", 1)) for n in ("sessions", "carts")}
    assert "user-00000" in [d["_id"] for d in incremental["sessions"]]
    assert rebuild_all(cli, db) == incremental
    db.sessions.drop()
    for i in (1, 2):
        assert cli("rebuild", "sessions", "--partition", f"{i}/2").exit_code == 0
    assert list(db.sessions.find().sort("_id", 1)) == incremental["sessions"]


def test_redact_names_the_archives_it_cannot_reach(cli: Any, db: Any, tmp_path: Path) -> None:
    seeded(cli, tmp_path, streams=2, versions=6)
    target = tmp_path / "a.ndjson"
    assert cli("archive", "--before", cut(3, 2).isoformat(), "--to", str(target)).exit_code == 0
    secret = json.dumps({"type": "signup", "stream": "user-00001", "data": {"password": "pw"}})
    assert cli("publish", "--file", "-", "--keep-secrets", input=secret + "\n").exit_code == 0
    result = cli("redact", "-o", "json")
    assert result.exit_code == 0, result.stderr
    report = out_json(result)
    assert report["changed"] == 1 and report["archives"] == [str(target)]
    pretty = cli("redact", "--dry-run")
    assert pretty.exit_code == 0 and str(target) in pretty.stdout + pretty.stderr


class FakeCursor:
    """A cursor of `n` documents that fails at `fail_at`, and says when it was closed."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.closed = n, fail_at, False

    def __iter__(self) -> Any:
        for i in range(self.n):
            if i == self.fail_at:
                raise ValueError("lost the server")
            yield {"_id": i}

    def close(self) -> None:
        self.closed = True


def test_read_ahead_gives_every_document_in_order_and_raises_the_readers_errors() -> None:
    n = lifecycle.READ_BATCH * 3 + 7
    cursor = FakeCursor(n)
    assert [d["_id"] for d in lifecycle.read_ahead(cursor)] == list(range(n))
    wait_for(lambda: cursor.closed, 5, "the cursor closed")

    failing = FakeCursor(n, fail_at=lifecycle.READ_BATCH + 3)
    seen = []
    with pytest.raises(ValueError, match="lost the server"):
        for doc in lifecycle.read_ahead(failing):
            seen.append(doc["_id"])
    assert seen == list(range(lifecycle.READ_BATCH))  # everything before the failed batch

    stopped = FakeCursor(n * 10)
    docs = lifecycle.read_ahead(stopped)
    assert next(docs) == {"_id": 0}
    docs.close()  # the caller stops early: the reader stops and closes the cursor
    wait_for(lambda: stopped.closed, 5, "the cursor closed after the caller stopped")
