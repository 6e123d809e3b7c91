"""Keyed projections through `evstream archive` and `evstream erase` (docs/lifecycle.md, "Keyed
projections"): rebuilds after an archive equal those before it, an archive that cannot keep a
key exactly is refused, and an erase refolds the keys the stream fed without its events."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from test_lifecycle import archive_lines, holds, out_json

PROJECTIONS = Path(__file__).parent / "projections"
DAILY = str(PROJECTIONS / "daily.py")  # daily_logins (key ts:day), tenants (key data.tenant)
KEYED = ("tenants", "daily_logins")
BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
# Stream i's tenant: acme and bolt have several streams each, solo one.
TENANTS = ("acme", "acme", "bolt", "bolt", "bolt", "solo")


def keyed_events(streams: int = 6, versions: int = 10) -> list[dict[str, Any]]:
    """Logins and orders of several tenants over several days; stream i has `versions - i`
    events, and version v of every stream lies in [6v, 6v + 6) hours after BASE."""
    out = []
    for i in range(streams):
        name = f"user-{i:05d}"
        for v in range(1, versions - i + 1):
            login = v % 3 != 0
            data: dict[str, Any] = {"tenant": TENANTS[i % len(TENANTS)]}
            data.update({"username": name} if login else {"amount": v * 10 + i})
            ts = BASE + timedelta(hours=6 * v + i, milliseconds=i * 7)
            out.append(
                {
                    "_id": f"{name}-v{v:04d}",
                    "stream": name,
                    "version": v,
                    "type": "login" if login else "order.placed",
                    "data": data,
                    "ts": {"$date": ts.isoformat().replace("+00:00", "Z")},
                }
            )
    return out


def cut(version: int) -> str:
    """The --before that archives versions below `version` of every stream."""
    return (BASE + timedelta(hours=6 * version)).isoformat()


def lines_of(events: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def publish(cli: Any, events: list[dict[str, Any]], **env: str) -> None:
    result = cli("publish", "--file", "-", "-o", "json", input=lines_of(events), **env)
    assert result.exit_code == 0, result.stderr


def keyed_docs(cli: Any, db: Any, *extra: str, **env: str) -> dict[str, list[dict[str, Any]]]:
    """Rebuild both keyed projections (full unless `extra` says otherwise); their documents."""
    for name in KEYED:
        result = cli("rebuild", name, "-m", DAILY, *extra, "-o", "json", **env)
        assert result.exit_code == 0, result.stderr
    return {name: list(db[name].find().sort("_id", 1)) for name in KEYED}


def fresh(cli: Any, client: Any, events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The keyed documents a full rebuild gives over just these events, in another database."""
    other = cli.db + "_fresh"
    client.drop_database(other)
    try:
        publish(cli, events, EVSTREAM_DB=other)
        return keyed_docs(cli, client[other], EVSTREAM_DB=other)
    finally:
        client.drop_database(other)


def renumbered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """These events with each stream's versions from 1 again, in the same order (a key's fold
    does not read versions, only their order)."""
    seen: dict[str, int] = {}
    out = []
    for event in events:
        seen[event["stream"]] = seen.get(event["stream"], 0) + 1
        out.append({**event, "version": seen[event["stream"]]})
    return out


def archive(cli: Any, target: Path, before: str, *extra: str) -> Any:
    return cli("archive", "--before", before, "--to", str(target), *extra, "-o", "json")


# --- archive -------------------------------------------------------------------------------------


def test_keyed_rebuilds_after_archives_equal_those_before(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    events = keyed_events()
    publish(cli, events)
    before = keyed_docs(cli, db)
    assert {d["_id"] for d in before["tenants"]} == {"acme", "bolt", "solo"}
    assert len(before["daily_logins"]) >= 3

    first, second = tmp_path / "a.ndjson.gz", tmp_path / "b.ndjson"
    result = archive(cli, first, cut(4), "-m", DAILY)
    assert result.exit_code == 0, result.stderr
    assert set(KEYED) <= set(out_json(result)["snapshots"])
    assert db.evstream_archived_keys.count_documents({"kind": "key"}) > 0
    assert keyed_docs(cli, db) == before
    # A second archive: streams of 6 versions or fewer go whole, the others stay in part.
    result = archive(cli, second, cut(7), "-m", DAILY)
    assert result.exit_code == 0, result.stderr
    assert db.events.count_documents({"stream": "user-00005"}) == 0
    assert db.events.count_documents({"stream": "user-00000"}) == 4
    assert keyed_docs(cli, db) == before

    # New events, then an incremental run (and one per part) equals a full one.
    more = [
        {"type": "login", "stream": "user-00001", "data": {"tenant": "acme", "username": "x"}},
        {"type": "order.placed", "stream": "user-00009", "data": {"tenant": "solo", "amount": 1}},
    ]
    publish(cli, more)
    incremental = keyed_docs(cli, db, "--incremental")
    assert incremental["tenants"] != before["tenants"]
    assert keyed_docs(cli, db) == incremental
    db.tenants.drop()
    for part in ("1/2", "2/2"):
        assert cli("rebuild", "tenants", "-m", DAILY, "--partition", part).exit_code == 0
    assert list(db.tenants.find().sort("_id", 1)) == incremental["tenants"]

    # Restored: the copies are in the snapshots already, and nothing changes.
    for path in (first, second):
        assert cli("publish", "--file", str(path)).exit_code == 0
    assert keyed_docs(cli, db) == incremental


def test_a_followers_refold_starts_from_the_key_snapshot(
    cli: Any, db: Any, server_uri: str, tmp_path: Path
) -> None:
    """What a follower does with an event it is handed (`evstream.keyed.deliver`): the key's
    refold starts from its snapshot, so the document gains that one event."""
    from evstream.keyed import KeyedWriter, deliver
    from evstream.projection import RebuildReport
    from evstream.projections import load_projection
    from evstream.settings import Settings
    from evstream.storage import connect

    publish(cli, keyed_events())
    before = {d["_id"]: d for d in keyed_docs(cli, db)["tenants"]}
    assert archive(cli, tmp_path / "a.ndjson", cut(5), "-m", DAILY).exit_code == 0
    new = {"type": "login", "stream": "user-00002", "data": {"tenant": "bolt", "username": "y"}}
    publish(cli, [new])
    store = connect(Settings(uri=server_uri, db=cli.db), lambda message: None)
    try:
        proj = load_projection("tenants", DAILY)
        report = RebuildReport(mode="follow", projection="tenants", key=proj.key)
        event = store.events.find_one({"stream": "user-00002"}, sort=[("version", -1)])
        assert deliver(store, proj, event, None, report, KeyedWriter(store, proj, report))
    finally:
        store.close()
    bolt = db.tenants.find_one({"_id": "bolt"})
    assert bolt["logins"] == before["bolt"]["logins"] + 1
    assert bolt["seq"][:-1] == before["bolt"]["seq"]
    assert bolt["events"] == before["bolt"]["events"] + 1
    assert keyed_docs(cli, db)["tenants"] == list(db.tenants.find().sort("_id", 1))


def test_an_archive_that_would_split_a_key_out_of_order_is_refused_and_cancelled(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    """`--stream user-00000` would move acme's events of that stream out while user-00001's
    older ones stay: the key's state at the edge could not be kept exactly."""
    publish(cli, keyed_events())
    assert cli("rebuild", "tenants", "-m", DAILY).exit_code == 0
    count = db.events.count_documents({})
    target = tmp_path / "a.ndjson"
    result = archive(cli, target, cut(6), "--stream", "user-00000", "-m", DAILY)
    assert result.exit_code == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cancelled" in result.stderr and "--stream" in result.stderr
    assert "'tenants'" in result.stderr or "'daily_logins'" in result.stderr
    assert db.events.count_documents({}) == count and not target.exists()
    assert db.evstream_archives.count_documents({}) == 0
    assert db.evstream_archived_keys.count_documents({}) == 0
    assert db.evstream_archived_streams.count_documents({}) == 0
    # Nothing blocks the next run.
    assert archive(cli, target, cut(6), "-m", DAILY).exit_code == 0


def test_a_keyed_projection_unknown_at_the_archive_is_refused_naming_it(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    publish(cli, keyed_events())
    target = tmp_path / "a.ndjson"
    assert archive(cli, target, cut(4)).exit_code == 0  # tenants not loaded, never rebuilt
    result = cli("rebuild", "tenants", "-m", DAILY)
    assert result.exit_code == 4
    assert "keyed projection 'tenants'" in result.stderr and str(target) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- erase ---------------------------------------------------------------------------------------


def scan(db: Any, needles: tuple[str, ...]) -> list[tuple[str, Any]]:
    return [
        (c, d["_id"]) for c in db.list_collection_names() for d in db[c].find() if holds(d, needles)
    ]


def test_erase_refolds_the_keys_the_stream_fed(cli: Any, db: Any, client: Any) -> None:
    events = keyed_events()
    publish(cli, events)
    keyed_docs(cli, db)
    name = "user-00001"
    refused = cli("erase", name, "--yes")  # tenants and daily_logins are not loaded
    assert refused.exit_code == 2 and "tenants" in refused.stderr and "--module" in refused.stderr
    assert db.events.count_documents({"stream": name}) > 0
    assert db.evstream_tombstones.count_documents({}) == 0

    result = cli("erase", name, "--yes", "-m", DAILY, "-o", "json")
    assert result.exit_code == 0, result.stderr
    report = out_json(result)["streams"][0]
    assert report["refolded"]["tenants"] == 1  # acme
    assert report["refolded"]["daily_logins"] >= 2
    expected = fresh(cli, client, [e for e in events if e["stream"] != name])
    assert {n: list(db[n].find().sort("_id", 1)) for n in KEYED} == expected
    assert not scan(db, (name,))
    assert keyed_docs(cli, db) == expected  # and a full rebuild agrees


def test_erase_of_a_stream_whose_keys_only_it_fed_removes_their_documents(
    cli: Any, db: Any
) -> None:
    events = keyed_events()
    publish(cli, events)
    keyed_docs(cli, db)
    result = cli("erase", "user-00005", "--yes", "-m", DAILY, "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert db.tenants.find_one({"_id": "solo"}) is None
    assert out_json(result)["streams"][0]["removed"]["tenants"] == 1


def test_erase_after_an_archive_drops_the_snapshots_that_hold_the_stream(
    cli: Any, db: Any, client: Any, tmp_path: Path
) -> None:
    events = keyed_events()
    publish(cli, events)
    keyed_docs(cli, db)
    target = tmp_path / "a.ndjson"
    assert archive(cli, target, cut(4), "-m", DAILY).exit_code == 0
    archived = {d["_id"] for d in archive_lines(target)}
    name = "user-00001"
    result = cli("erase", name, "--yes", "-m", DAILY, "-o", "json")
    assert result.exit_code == 0, result.stderr
    report = out_json(result)["streams"][0]
    assert report["keyed_snapshots_dropped"]["tenants"] == 1  # acme's
    assert report["archive_files"] == [str(target)]
    assert "keyed projection tenants" in result.stderr and str(target) in result.stderr
    assert not scan(db, (name,))
    assert db.evstream_tombstones.find_one()["state"] == "erased"

    # acme is the fold of what the log still holds; bolt and solo kept their archived share.
    left = renumbered([e for e in events if e["stream"] != name and e["_id"] not in archived])
    docs = {d["_id"]: d for d in db.tenants.find()}
    assert docs["acme"] == next(
        d for d in fresh(cli, client, left)["tenants"] if d["_id"] == "acme"
    )
    assert keyed_docs(cli, db)["tenants"] == list(db.tenants.find().sort("_id", 1))

    # The archive back without the stream's lines, and a full rebuild: exactly as if the
    # stream had never been.
    kept = [line for line in target.read_text().splitlines() if f'"{name}"' not in line]
    assert cli("publish", "--file", "-", input="\n".join(kept) + "\n").exit_code == 0
    expected = fresh(cli, client, [e for e in events if e["stream"] != name])
    assert keyed_docs(cli, db) == expected


def test_an_erase_killed_before_the_refold_refolds_when_run_again(
    cli: Any, db: Any, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = keyed_events()
    publish(cli, events)
    keyed_docs(cli, db)
    name = "user-00003"
    from evstream.keyed_archive import KeyedErase

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("killed")

    monkeypatch.setattr(KeyedErase, "refold", boom)
    assert cli("erase", name, "--yes", "-m", DAILY).exit_code == 1
    monkeypatch.undo()
    assert db.events.count_documents({"stream": name}) == 0  # the events went
    tombstone = db.evstream_tombstones.find_one()
    assert tombstone["state"] == "erasing" and tombstone["refold"]  # the keys, kept meanwhile
    result = cli("erase", name, "--yes", "-m", DAILY, "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert out_json(result)["streams"][0]["refolded"]["tenants"] == 1  # bolt, remembered
    expected = fresh(cli, client, [e for e in events if e["stream"] != name])
    assert {n: list(db[n].find().sort("_id", 1)) for n in KEYED} == expected
    assert not scan(db, (name,))
    assert "refold" not in db.evstream_tombstones.find_one()


def test_an_archive_that_kept_no_key_snapshots_does_not_let_a_keyed_rebuild_through(
    cli: Any, db: Any, tmp_path: Path
) -> None:
    """A run recorded before keyed snapshots existed lists the projection among those it knew,
    but kept no snapshot of its keys: its rebuild is refused, not folded from a truncated log."""
    publish(cli, keyed_events())
    target = tmp_path / "a.ndjson"
    assert archive(cli, target, cut(4), "-m", DAILY).exit_code == 0
    assert cli("rebuild", "tenants", "-m", DAILY).exit_code == 0
    db.evstream_archives.update_many({}, {"$unset": {"keyed": ""}})
    result = cli("rebuild", "tenants", "-m", DAILY)
    assert result.exit_code == 4 and str(target) in result.stderr
