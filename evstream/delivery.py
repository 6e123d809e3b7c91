"""`watch --exec CMD`: at-least-once delivery of changes to a handler (docs/delivery.md).

CMD runs through the shell with a batch of changes as JSON lines on its stdin. The watch's
checkpoint moves past a batch only after CMD exits 0; a failing batch is retried with backoff,
then stops the watch (exit 6, checkpoint before the batch) or goes to the dead letters. Nothing
here knows MongoDB: the watcher hands changes in and asks whether they are acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from evstream.errors import EvstreamError, ExitCode, InvalidInput
from evstream.interrupts import CTRL_C

ON_FAILURE = ("stop", "dead-letter")
# Backoff between attempts of one batch: doubling from the first, at most the last, jittered.
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
# How long CMD may take to exit once its stdin is closed after a timeout or a second Ctrl-C.
KILL_GRACE = 2.0
# While CMD runs, the watch's heartbeat is offered a turn this often (seconds).
BEAT_EVERY = 0.25


class ExecFailed(EvstreamError):
    """CMD kept failing on a batch and --on-failure is stop: exit 6."""

    exit_code = ExitCode.HANDLER_FAILED


@dataclass
class ExecOptions:
    """What `--exec` was asked to do."""

    command: str
    batch: int = 100
    batch_wait: float = 1.0
    retries: int = 5
    timeout: float | None = None
    on_failure: str = "stop"
    checkpoint: str | None = None
    partition: tuple[int, int] | None = None
    backoff: float = RETRY_FIRST  # the first wait between runs of a failing batch

    def check(self) -> None:
        """Refuse options that cannot work together."""
        if not self.command.strip():
            raise InvalidInput("--exec needs a command")
        if self.checkpoint is None:
            raise InvalidInput(
                "--exec needs --checkpoint NAME: without one, nothing records what CMD has "
                "processed"
            )
        if self.on_failure not in ON_FAILURE:
            raise InvalidInput(f"--on-failure must be one of {', '.join(ON_FAILURE)}")
        if self.batch < 1 or self.retries < 0 or self.batch_wait < 0:
            raise InvalidInput("--batch must be at least 1, --retries and --batch-wait at least 0")
        if self.timeout is not None and self.timeout <= 0:
            raise InvalidInput("--exec-timeout must be more than 0 seconds")


@dataclass
class Attempt:
    """How one run of CMD on a batch ended."""

    ok: bool
    reason: str  # "exit 0", "exit 3", "killed by SIGKILL", "timed out after 5 s" …
    last_stderr: str = ""


@dataclass
class Batch:
    """Changes waiting for CMD, as their JSON lines, with what identifies each."""

    lines: list[str] = field(default_factory=list)
    ids: list[Any] = field(default_factory=list)
    opened: float = 0.0

    def __len__(self) -> int:
        return len(self.lines)


class Executor:
    """Runs CMD on batches of changes until each batch succeeds (or is dead-lettered).

    `add` queues a change's JSON line; it returns True once the change and every one before it
    are acknowledged (CMD exited 0 on them, or they went to the dead letters), which is when the
    watcher may save its checkpoint.
    """

    def __init__(
        self,
        options: ExecOptions,
        *,
        stderr: IO[str],
        notice: Callable[[str], None],
        dead_letter: Callable[[list[str], list[Any], Attempt, int], None],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.options = options
        # Called about every BEAT_EVERY seconds while CMD runs, and before a retry's wait: the
        # watch's liveness keeps coming while a long batch runs (docs/operating.md).
        self.beat = beat
        self.stderr = stderr
        self.notice = notice
        self.dead_letter = dead_letter
        self.clock = clock
        self.sleep = sleep
        self.batch = Batch()
        self.delivered = 0  # changes acknowledged
        self.dead = 0  # changes dead-lettered
        self.retries = 0  # runs of CMD on a batch that had failed before

    @property
    def pending(self) -> bool:
        """Whether changes wait that are not acknowledged yet."""
        return bool(self.batch)

    def add(self, line: str, ident: Any) -> bool:
        """Queue one change; runs the batch when it is full. True: everything is acknowledged."""
        if not self.batch:
            self.batch.opened = self.clock()
        self.batch.lines.append(line)
        self.batch.ids.append(ident)
        if len(self.batch) >= self.options.batch:
            self.flush()
            return True
        return False

    def due(self) -> bool:
        """Whether the waiting batch has waited --batch-wait and should go now."""
        return bool(self.batch) and self.clock() - self.batch.opened >= self.options.batch_wait

    def flush(self) -> None:
        """Run CMD on the waiting changes until they are acknowledged (or raise ExecFailed)."""
        if not self.batch:
            return
        batch = self.batch
        attempts = self.options.retries + 1
        last = Attempt(False, "not run")
        for attempt in range(1, attempts + 1):
            last = self.run(batch, attempt)
            if last.ok:
                break
            if attempt < attempts:
                self.retries += 1
                delay = self.options.backoff * 2 ** (attempt - 1)
                delay = min(delay, RETRY_MAX) * random.uniform(0.8, 1.2)
                self.notice(
                    f"--exec: batch of {len(batch)} failed ({last.reason}); "
                    f"attempt {attempt + 1} of {attempts} in {delay:.1f} s"
                )
                self.beat()
                self.sleep(delay)
        if not last.ok:
            if self.options.on_failure == "stop":
                first, final = batch.ids[0], batch.ids[-1]
                said = f"; its last stderr line: {last.last_stderr}" if last.last_stderr else ""
                raise ExecFailed(
                    f"--exec failed {attempts} time(s) on a batch of {len(batch)} change(s) "
                    f"({first!r} … {final!r}): {last.reason}{said}; the checkpoint stays "
                    "before the batch",
                    hint="fix the handler and run the same watch again, or use "
                    "--on-failure dead-letter to set such batches aside",
                )
            self.dead_letter(batch.lines, batch.ids, last, attempts)
            self.dead += len(batch)
            self.notice(
                f"--exec: {len(batch)} change(s) sent to the dead letters after {attempts} "
                f"attempt(s) ({last.reason})"
            )
        else:
            self.delivered += len(batch)
        self.batch = Batch()

    def environment(self, batch: Batch, attempt: int) -> dict[str, str]:
        """What CMD learns from its environment about the batch it is given."""
        env = dict(os.environ)
        env.update(
            EVSTREAM_CHECKPOINT=self.options.checkpoint or "",
            EVSTREAM_PARTITION=(
                f"{self.options.partition[0]}/{self.options.partition[1]}"
                if self.options.partition
                else ""
            ),
            EVSTREAM_BATCH_SIZE=str(len(batch)),
            EVSTREAM_BATCH_FIRST=str(batch.ids[0]),
            EVSTREAM_BATCH_LAST=str(batch.ids[-1]),
            EVSTREAM_ATTEMPT=str(attempt),
        )
        return env

    def run(self, batch: Batch, attempt: int) -> Attempt:
        """Run CMD once on the batch.

        CMD gets a process group of its own, so a Ctrl-C at the terminal reaches evstream only:
        evstream lets the running CMD finish (a second Ctrl-C stops it). Its stderr is passed
        through, each line prefixed with `[exec] `; its stdout is evstream's.
        """
        proc = subprocess.Popen(
            self.options.command,
            shell=True,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.environment(batch, attempt),
            start_new_session=True,
        )
        last = [""]
        threads: list[threading.Thread] = []
        try:  # from here on a KeyboardInterrupt stops CMD, even one before it is waited for
            CTRL_C.on_hold = lambda: self.notice(
                "--exec: letting the running command finish (Ctrl-C again stops it)"
            )
            threads.append(
                threading.Thread(target=self._relay, args=(proc.stderr, last), daemon=True)
            )
            threads.append(
                threading.Thread(target=_feed, args=(proc.stdin, batch.lines), daemon=True)
            )
            for thread in threads:
                thread.start()
            code = self._wait(proc)
        except KeyboardInterrupt:
            _kill(proc)
            raise
        finally:
            CTRL_C.on_hold = None
            for thread in threads:
                if thread.ident is not None:  # started
                    thread.join(KILL_GRACE)
        if code is None:
            return Attempt(False, f"timed out after {self.options.timeout:g} s", last[0])
        if code == 0:
            return Attempt(True, "exit 0", last[0])
        if code < 0:
            return Attempt(False, f"killed by {_signal_name(-code)}", last[0])
        return Attempt(False, f"exit {code}", last[0])

    def _wait(self, proc: subprocess.Popen[bytes]) -> int | None:
        """CMD's exit code, or None after --exec-timeout (then it is killed).

        The watcher runs this holding Ctrl-C (evstream.interrupts): a first Ctrl-C waits for
        CMD to finish, a second one raises KeyboardInterrupt here and `run` stops CMD.
        """
        timeout = self.options.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = BEAT_EVERY
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    _kill(proc)
                    return None
            try:
                return proc.wait(timeout=step)  # a signal handler still runs here (PEP 475)
            except subprocess.TimeoutExpired:
                self.beat()

    def _relay(self, stream: IO[bytes] | None, last: list[str]) -> None:
        if stream is None:
            return
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.strip():
                last[0] = text.strip()[:300]
            with contextlib.suppress(OSError, ValueError):
                self.stderr.write(f"[exec] {text}\n")
                self.stderr.flush()


def _feed(stdin: IO[bytes] | None, lines: list[str]) -> None:
    """Write the batch to CMD's stdin and close it; a CMD that stops reading is its business."""
    if stdin is None:
        return
    try:
        stdin.write("".join(line + "\n" for line in lines).encode())
    except (BrokenPipeError, OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            stdin.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Stop CMD and everything it started (its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def partition_checkpoint(name: str, partition: tuple[int, int] | None) -> str:
    """The checkpoint a part keeps: `NAME part I of N`."""
    if partition is None:
        return name
    return f"{name} part {partition[0]} of {partition[1]}"


_PART = re.compile(r"^(?P<name>.*) part (?P<i>\d+) of (?P<n>\d+)$")


def split_part(checkpoint: str) -> tuple[str, str | None]:
    """A checkpoint's name and part: 'mailer part 2 of 4' -> ('mailer', '2/4')."""
    match = _PART.match(checkpoint)
    if match is None:
        return checkpoint, None
    return match["name"], f"{match['i']}/{match['n']}"


def check_parts(name: str, partition: tuple[int, int] | None, existing: list[str]) -> None:
    """Refuse a part whose N differs from the existing parts of the same name (their streams
    would be split differently, and some would go to two watchers or to none)."""
    found = sorted(
        (int(m["i"]), int(m["n"]), text)
        for text in existing
        if (m := _PART.match(text)) and m["name"] == name
    )
    others = [text for _, n, text in found if partition is None or n != partition[1]]
    if not others:
        return
    ns = sorted({n for _, n, text in found if text in others})
    if partition is None:
        wanted = "without --partition"
    else:
        wanted = f"as part {partition[0]} of {partition[1]}"
    shown = ", ".join(repr(o) for o in others[:4]) + (" …" if len(others) > 4 else "")
    pattern = "/^" + re.escape(name).replace("/", "\\/") + " part /"
    raise InvalidInput(
        f"checkpoint {name!r} has parts for {' and '.join(map(str, ns))} part(s) ({shown}); "
        f"starting it {wanted} would split the streams differently",
        hint=f"use --partition I/{ns[0]}, or stop those watchers and delete their checkpoints "
        f"first; in mongosh: db.evstream_checkpoints.deleteMany({{_id: {pattern}}}) and "
        f"db.evstream_checkpoint_window.deleteMany({{c: {pattern}}})",
    )
