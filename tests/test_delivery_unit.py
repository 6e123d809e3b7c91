"""The --exec executor on its own: real shell commands, fake clocks for the backoff."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from evstream.delivery import (
    ExecFailed,
    ExecOptions,
    Executor,
    partition_checkpoint,
)
from evstream.errors import ExitCode, InvalidInput
from evstream.events import parse_partition, partition_of


def executor(command: str, **options: Any) -> tuple[Executor, list[Any], list[float], io.StringIO]:
    dead: list[Any] = []
    sleeps: list[float] = []
    stderr = io.StringIO()
    ex = Executor(
        ExecOptions(command=command, checkpoint="cp", **options),
        stderr=stderr,
        notice=lambda m: None,
        dead_letter=lambda lines, ids, attempt, n: dead.append((lines, ids, attempt, n)),
        sleep=sleeps.append,
    )
    return ex, dead, sleeps, stderr


def lines(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [
        (json.dumps({"op": "insert", "doc": {"_id": f"e{i}"}}), f"e{i}")
        for i in range(start, start + n)
    ]


def test_a_full_batch_goes_to_cmd_on_stdin_and_is_acknowledged(tmp_path: Path) -> None:
    out = tmp_path / "got"
    env_file = tmp_path / "env"
    ex, dead, _, _ = executor(f"cat >> {out}; env | grep ^EVSTREAM_ | sort > {env_file}", batch=3)
    acks = [ex.add(line, ident) for line, ident in lines(3)]
    assert acks == [False, False, True]
    assert [json.loads(x)["doc"]["_id"] for x in out.read_text().splitlines()] == ["e0", "e1", "e2"]
    env = dict(row.split("=", 1) for row in env_file.read_text().splitlines())
    assert env["EVSTREAM_CHECKPOINT"] == "cp"
    assert env["EVSTREAM_BATCH_SIZE"] == "3"
    assert (env["EVSTREAM_BATCH_FIRST"], env["EVSTREAM_BATCH_LAST"]) == ("e0", "e2")
    assert env["EVSTREAM_ATTEMPT"] == "1"
    assert not ex.pending and ex.delivered == 3 and dead == []


def test_a_batch_that_fails_once_is_retried_with_backoff(tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    out = tmp_path / "got"
    ex, _, sleeps, stderr = executor(
        f"if [ -e {marker} ]; then cat >> {out}; else touch {marker}; echo boom >&2; exit 3; fi",
        batch=2,
    )
    for line, ident in lines(2):
        ex.add(line, ident)
    assert len(out.read_text().splitlines()) == 2
    assert len(sleeps) == 1 and sleeps[0] > 0
    assert "[exec] boom" in stderr.getvalue()


def test_a_batch_that_keeps_failing_stops_with_exit_6_and_the_last_stderr_line() -> None:
    ex, dead, sleeps, _ = executor(
        "cat > /dev/null; echo 'cannot send mail' >&2; exit 1", batch=2, retries=3
    )
    ex.add(*lines(1)[0])
    with pytest.raises(ExecFailed) as caught:
        ex.add(*lines(1, 1)[0])
    assert caught.value.exit_code == ExitCode.HANDLER_FAILED
    line = caught.value.line()
    assert "4 time(s)" in line and "exit 1" in line and "cannot send mail" in line
    assert "'e0' … 'e1'" in line
    assert len(sleeps) == 3
    assert ex.pending  # not acknowledged: the checkpoint stays before the batch
    assert dead == []


def test_dead_letter_sets_the_batch_aside_and_goes_on() -> None:
    ex, dead, _, _ = executor("exit 7", batch=2, retries=1, on_failure="dead-letter")
    for line, ident in lines(2):
        ex.add(line, ident)
    assert not ex.pending and ex.dead == 2 and ex.delivered == 0
    ((got_lines, ids, attempt, attempts),) = dead
    assert ids == ["e0", "e1"] and len(got_lines) == 2
    assert attempt.reason == "exit 7" and attempts == 2


def test_a_cmd_that_outlives_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    ex, _, _, _ = executor(
        f"sleep 60 & echo $! > {pid_file}; wait", batch=1, retries=0, timeout=0.5
    )
    with pytest.raises(ExecFailed) as caught:
        ex.add(*lines(1)[0])
    assert "timed out after 0.5 s" in caught.value.line()
    child = int(pid_file.read_text())

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 10, "the handler's child to be killed")


def test_a_crash_is_a_failure_named_by_its_signal() -> None:
    ex, _, _, _ = executor("kill -9 $$", batch=1, retries=0)
    with pytest.raises(ExecFailed) as caught:
        ex.add(*lines(1)[0])
    assert "killed by SIGKILL" in caught.value.line()


def test_a_cmd_that_does_not_read_its_input_may_still_succeed() -> None:
    ex, _, _, _ = executor("true", batch=500)
    big = [(json.dumps({"pad": "x" * 2000, "i": i}), i) for i in range(500)]
    assert [ex.add(*item) for item in big][-1] is True


def test_partial_batches_go_after_batch_wait() -> None:
    now = [0.0]
    ex = Executor(
        ExecOptions(command="cat > /dev/null", checkpoint="cp", batch=100, batch_wait=2),
        stderr=io.StringIO(),
        notice=lambda m: None,
        dead_letter=lambda *a: None,
        clock=lambda: now[0],
    )
    ex.add(*lines(1)[0])
    assert not ex.due()
    now[0] = 2.5
    assert ex.due()
    ex.flush()
    assert not ex.pending and ex.delivered == 1


def test_a_keyboard_interrupt_stops_the_running_cmd(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    ex, _, _, _ = executor(f"echo $$ > {pid_file}; sleep 60", batch=1)
    main = threading.main_thread().ident
    assert main is not None

    def interrupt() -> None:
        wait_for(pid_file.exists, 10, "the handler to start")
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        ex.add(*lines(1)[0])
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("options", [{"checkpoint": None}, {"on_failure": "retry"}, {"batch": 0}])
def test_options_that_cannot_work_are_refused(options: dict[str, Any]) -> None:
    base: dict[str, Any] = {"command": "cat", "checkpoint": "cp", **options}
    with pytest.raises(InvalidInput):
        ExecOptions(**base).check()


@pytest.mark.parametrize("text", ["0/3", "4/3", "1", "a/b", "1/0", "-1/2"])
def test_bad_partitions_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_partition(text)


def test_partitions_cover_every_stream_exactly_once_and_stably() -> None:
    streams = [f"user-{i}" for i in range(3000)]
    parts = [partition_of(s, 3) for s in streams]
    assert set(parts) == {1, 2, 3}
    assert all(800 < parts.count(p) < 1200 for p in (1, 2, 3))  # spread evenly
    assert [partition_of(s, 3) for s in streams] == parts  # stable
    assert partition_of("alice", 1) == 1
    assert parse_partition("2/3") == (2, 3)
    assert partition_checkpoint("mailer", (2, 3)) == "mailer part 2 of 3"
    assert partition_checkpoint("mailer", None) == "mailer"


def test_the_partition_of_a_stream_is_the_same_in_every_process() -> None:
    """Python's str hash is salted per process; two watchers must agree on every stream."""
    import subprocess
    import sys

    code = "from evstream.events import parse_partition, partition_of; print([partition_of(f's{i}', 4) for i in range(200)])"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        ).stdout
        for seed in ("1", "2", "random")
    }
    assert len(runs) == 1


def test_parts_with_another_n_are_refused_with_the_fix() -> None:
    from evstream.delivery import check_parts

    existing = ["mailer part 1 of 3", "mailer part 2 of 3", "other part 1 of 2", "mailer"]
    check_parts("mailer", (3, 3), existing)  # the same N: fine
    check_parts("billing", (1, 4), existing)  # no parts yet: fine
    with pytest.raises(InvalidInput) as caught:
        check_parts("mailer", (1, 4), existing)
    line = caught.value.line()
    assert "3 part(s)" in line and "'mailer part 1 of 3'" in line
    assert "--partition I/3" in line and "deleteMany" in line
    with pytest.raises(InvalidInput):
        check_parts("mailer", None, existing)  # the whole log beside parts of it
