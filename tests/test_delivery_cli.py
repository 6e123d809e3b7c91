"""Delivery through the CLI: what watch says when its reader goes away, and `--exec`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import Cli, write_numbered_events


def fill_log(cli: Cli, tmp_path: Path, total: int = 3000) -> None:
    path = write_numbered_events(tmp_path / "log.ndjson", total, 30)
    r = cli("publish", "--file", str(path), "-o", "json")
    assert r.exit_code == 0, r.stderr


def read_then_close(cli: Cli, *args: str, lines: int = 3) -> tuple[int, str]:
    """Run watch, read a few lines of its stdout and go away, as `| head -3` does."""
    proc = cli.popen("watch", "--from", "start", "--idle-timeout", "20", "-o", "json", *args,
                     stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    for _ in range(lines):
        assert proc.stdout.readline()
    proc.stdout.close()  # more than a pipe buffer is still to come: the next write fails
    code = proc.wait(60)
    err = proc.stderr.read()
    proc.stderr.close()
    return code, err


def test_a_reader_that_goes_away_from_a_checkpointed_watch_is_reported(
    cli: Cli, tmp_path: Path
) -> None:
    fill_log(cli, tmp_path)
    code, err = read_then_close(cli, "--checkpoint", "mailer")
    assert code == 1, err
    assert "the reader of stdout went away" in err and "--exec" in err
    assert "Traceback" not in err


def test_head_without_a_checkpoint_stays_quiet(cli: Cli, tmp_path: Path) -> None:
    fill_log(cli, tmp_path)
    code, err = read_then_close(cli)
    assert code == 0, err
    assert "error" not in err and "Traceback" not in err


# --- --exec ---------------------------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

from waiting import wait_for  # noqa: E402


def handler(tmp_path: Path, body: str = "") -> tuple[str, Path]:
    """A shell handler that appends its batch to got.ndjson after running `body`."""
    got = tmp_path / "got.ndjson"
    script = tmp_path / "handler.sh"
    script.write_text(f"#!/bin/sh\n{body}\ncat >> {got}\n")
    script.chmod(0o755)
    return str(script), got


def delivered(got: Path) -> list[dict[str, object]]:
    if not got.exists():
        return []
    return [json.loads(line)["doc"] for line in got.read_text().splitlines() if line.strip()]


def exec_watch(
    cli: Cli, command: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return cli.run(
        "watch", "--from", "start", "--no-follow", "--checkpoint", "mailer", "--exec", command,
        "--retry-backoff", "0.01", *args, timeout=timeout,
    )  # fmt: skip


def assert_in_version_order(docs: list[dict[str, object]]) -> None:
    last: dict[object, int] = {}
    for doc in docs:
        stream, version = doc["stream"], int(doc["version"])  # type: ignore[call-overload]
        assert version > last.get(stream, 0), f"{stream}@{version} after @{last.get(stream)}"
        last[stream] = version


def test_every_event_reaches_the_handler_in_batches(cli: Cli, tmp_path: Path) -> None:
    fill_log(cli, tmp_path, 450)
    command, got = handler(tmp_path, f'echo "$EVSTREAM_BATCH_SIZE" >> {tmp_path}/sizes')
    r = exec_watch(cli, command, "--batch", "100")
    assert r.returncode == 0, r.stderr
    docs = delivered(got)
    assert sorted(d["_id"] for d in docs) == [f"e{i:06d}" for i in range(450)]
    assert_in_version_order(docs)
    sizes = (tmp_path / "sizes").read_text().split()
    assert sizes == ["100", "100", "100", "100", "50"]
    again = exec_watch(cli, command)  # the checkpoint is past everything
    assert again.returncode == 0, again.stderr
    assert len(delivered(got)) == 450


def test_a_batch_that_fails_once_is_retried_and_nothing_is_lost(cli: Cli, tmp_path: Path) -> None:
    fill_log(cli, tmp_path, 300)
    command, got = handler(
        tmp_path, '[ "$EVSTREAM_ATTEMPT" = 1 ] && { echo "smtp is down" >&2; exit 75; }'
    )
    r = exec_watch(cli, command, "--batch", "50")
    assert r.returncode == 0, r.stderr
    assert "[exec] smtp is down" in r.stderr and "attempt 2 of 6" in r.stderr
    assert sorted(d["_id"] for d in delivered(got)) == [f"e{i:06d}" for i in range(300)]


def test_a_handler_that_keeps_failing_stops_before_the_batch(cli: Cli, tmp_path: Path) -> None:
    fill_log(cli, tmp_path, 250)
    flag = tmp_path / "broken"
    flag.touch()
    # Fails on the batch holding e000120 while the flag exists; fine otherwise.
    command, got = handler(
        tmp_path,
        f'batch=$(cat); [ -e {flag} ] && echo "$batch" | grep -q e000120 '
        f'&& {{ echo "cannot send to e000120" >&2; exit 1; }}; echo "$batch" >> {tmp_path}/got.ndjson; exit 0',
    )
    r = exec_watch(cli, command, "--batch", "50", "--retries", "2")
    assert r.returncode == 6, r.stderr
    line = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "3 time(s)" in line[0] and "cannot send to e000120" in line[0]
    first = {d["_id"] for d in delivered(got)}
    assert "e000120" not in first and len(first) == 100  # the two batches before it
    flag.unlink()  # the handler is fixed: the same watch goes on from before the batch
    r = exec_watch(cli, command, "--batch", "50")
    assert r.returncode == 0, r.stderr
    assert {d["_id"] for d in delivered(got)} == {f"e{i:06d}" for i in range(250)}


def test_dead_letters_set_a_poison_batch_aside_and_go_on(
    cli: Cli, tmp_path: Path, db: object
) -> None:
    fill_log(cli, tmp_path, 200)
    command, got = handler(
        tmp_path,
        f'batch=$(cat); echo "$batch" | grep -q e000077 && exit 1; '
        f'echo "$batch" >> {tmp_path}/got.ndjson; exit 0',
    )
    r = exec_watch(cli, command, "--batch", "20", "--retries", "1", "--on-failure", "dead-letter")
    assert r.returncode == 0, r.stderr
    ids = {d["_id"] for d in delivered(got)}
    assert len(ids) == 180 and "e000077" not in ids
    dead = list(db.evstream_dead_letters.find())  # type: ignore[attr-defined]
    assert len(dead) == 20 and {d["checkpoint"] for d in dead} == {"mailer"}
    assert "e000077" in {d["change_id"] for d in dead}
    assert all(d["attempts"] == 2 and d["error"] == "exit 1" for d in dead)
    status = json.loads(cli("status", "-o", "json").stdout)
    assert status["dead_letters"] == {"mailer": 20}


def test_kill_9_of_evstream_and_of_the_handler_loses_nothing(cli: Cli, tmp_path: Path) -> None:
    """A publisher writes while watch --exec is killed at seeded random moments, and its handler
    is killed now and then; after a last run every event has reached a successful handler."""
    fill_log(cli, tmp_path, 600)
    rng = random.Random(20261201)
    got = tmp_path / "got.ndjson"
    script = tmp_path / "handler.sh"
    # One run in five is killed (SIGKILL) halfway through its batch.
    script.write_text(
        "#!/bin/sh\n"
        "batch=$(cat)\n"
        "if [ $(( $(od -An -N1 -tu1 /dev/urandom) % 5 )) -eq 0 ]; then kill -9 $$; fi\n"
        f'echo "$batch" >> {got}\n'
    )
    script.chmod(0o755)
    stop = threading.Event()
    published = [600]

    def publisher() -> None:
        while not stop.is_set() and published[0] < 900:
            r = cli.run("publish", "t", "-s", f"s{published[0] % 30}", "--id", f"e{published[0]:06d}",
                        "-d", "{}", "-o", "json")  # fmt: skip
            assert r.returncode == 0, r.stderr
            published[0] += 1

    writer = threading.Thread(target=publisher, daemon=True)
    writer.start()
    kills = 0
    for _ in range(5):
        proc = cli.popen(
            "watch", "--from", "start", "--checkpoint", "mailer", "--exec", str(script),
            "--batch", "25", "--batch-wait", "0.2", "--retry-backoff", "0.01", "-o", "json",
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda p=proc: got.exists() or p.poll() is not None, 60, "a first batch")
        threading.Event().wait(rng.uniform(0.2, 1.5))  # a random moment, not a synchronisation
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(30)
        for f in (proc.stdout, proc.stderr):
            assert f is not None
            f.close()
    stop.set()
    writer.join(120)
    assert kills >= 3
    r = cli.run("watch", "--from", "start", "--no-follow", "--checkpoint", "mailer", "--exec",
                f"cat >> {got}", "--retry-backoff", "0.01", timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    ids = {d["_id"] for d in delivered(got)}
    assert ids == {f"e{i:06d}" for i in range(published[0])}


def test_three_partitions_share_the_log_like_a_consumer_group(cli: Cli, tmp_path: Path) -> None:
    fill_log(cli, tmp_path, 600)
    outs = []
    for i in (1, 2, 3):
        out = tmp_path / f"part{i}.ndjson"
        r = cli.run("watch", "--from", "start", "--no-follow", "--checkpoint", "mailer",
                    "--partition", f"{i}/3", "--exec", f"cat >> {out}", timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        outs.append(delivered(out))
    streams = [{d["stream"] for d in docs} for docs in outs]
    assert all(streams) and not (
        streams[0] & streams[1] or streams[0] & streams[2] or streams[1] & streams[2]
    )
    everything = [d["_id"] for docs in outs for d in docs]
    assert sorted(everything) == [f"e{i:06d}" for i in range(600)]
    for docs in outs:
        assert_in_version_order(docs)
    status = json.loads(cli("status", "-o", "json").stdout)
    names = {item["name"] for item in status["checkpoints"]["items"]}
    assert {"mailer part 1 of 3", "mailer part 2 of 3", "mailer part 3 of 3"} <= names
    r = cli.run("watch", "--checkpoint", "mailer", "--partition", "1/4", "--no-follow")
    assert r.returncode == 2 and "--partition I/3" in r.stderr


def test_ctrl_c_lets_the_running_handler_finish_then_saves(cli: Cli, tmp_path: Path) -> None:
    fill_log(cli, tmp_path, 40)
    started = tmp_path / "started"
    command, got = handler(tmp_path, f"touch {started}; sleep 1")
    proc = cli.popen("watch", "--from", "start", "--checkpoint", "mailer", "--exec", command,
                     "--batch", "40", stdin=subprocess.DEVNULL)  # fmt: skip
    wait_for(started.exists, 60, "the handler to start")
    os.kill(proc.pid, signal.SIGINT)
    code = proc.wait(30)
    assert proc.stderr is not None
    err = proc.stderr.read()
    for f in (proc.stdout, proc.stderr):
        assert f is not None
        f.close()
    assert code == 130, err
    assert "letting the running command finish" in err
    assert len(delivered(got)) == 40  # it finished its batch
    again = exec_watch(cli, f"cat >> {tmp_path}/again.ndjson")
    assert again.returncode == 0, again.stderr
    assert delivered(tmp_path / "again.ndjson") == []  # and the checkpoint was saved past it


def test_exec_needs_a_checkpoint(cli: Cli) -> None:
    r = cli.run("watch", "--exec", "cat", "--no-follow")
    assert r.returncode == 2 and "--exec needs --checkpoint" in r.stderr
    assert sys.executable  # (the CLI ran as a real process)


def test_a_server_restart_under_exec_loses_nothing(own_server: object, tmp_path: Path) -> None:
    """The server killed and restarted while --exec delivers: every event reaches the handler."""
    import pymongo
    from conftest import TEST_URI

    if TEST_URI:
        import pytest

        pytest.skip("kills and restarts its own nx-27017 server")
    own = Cli(own_server.uri, "exec_restart")  # type: ignore[attr-defined]
    fill_log(own, tmp_path, 200)
    got = tmp_path / "got.ndjson"
    proc = own.popen(
        "watch", "--from", "start", "--checkpoint", "mailer", "--exec", f"cat >> {got}",
        "--batch", "20", "--batch-wait", "0.2", "--retry-backoff", "0.01",
        stdin=subprocess.DEVNULL, EVSTREAM_TIMEOUT_MS="1000",
    )  # fmt: skip
    try:
        wait_for(lambda: len(delivered(got)) >= 40, 60, "the first batches")
        own_server.kill()  # type: ignore[attr-defined]
        own_server.start()  # type: ignore[attr-defined]
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            own_server.uri,
            serverSelectionTimeoutMS=10_000,  # type: ignore[attr-defined]
        )
        client["exec_restart"].events.insert_many(
            [{"_id": f"e{i:06d}", "stream": f"late{i % 3}", "version": i // 3 - 65,
              "type": "t", "data": {}, "ts": __import__("datetime").datetime.now(
                  __import__("datetime").timezone.utc)} for i in range(200, 260)]
        )  # fmt: skip
        client.close()
        want = {f"e{i:06d}" for i in range(260)}
        wait_for(lambda: {d["_id"] for d in delivered(got)} >= want, 90, "every event delivered")
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(30)
        for f in (proc.stdout, proc.stderr):
            assert f is not None
            f.close()
    firsts, seen = [], set()  # a batch may come twice: each event's first delivery
    for doc in delivered(got):
        if doc["_id"] not in seen:
            seen.add(doc["_id"])
            firsts.append(doc)
    assert_in_version_order(firsts)
