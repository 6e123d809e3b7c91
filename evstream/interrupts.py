"""Ctrl-C, delivered where evstream can act on it.

Python raises KeyboardInterrupt in whatever code runs when SIGINT arrives. If that is a
finalizer (a `__del__`, as pymongo's sessions and cursors have, run whenever the garbage
collector frees one), Python prints "Exception ignored in ..." and drops the exception: the
command runs on as if Ctrl-C had never been pressed. evstream's handler sees that case and
delivers the interrupt again a moment later, once the finalizer is done.

SIGTERM, which systemd, Docker and Kubernetes send to stop a process, is handled the same way
(a KeyboardInterrupt where the command can act on it, held like Ctrl-C): a command stopped by it
reports what it did, as after Ctrl-C, and exits 143 instead of 130 (`CtrlC.stopped`,
`CtrlC.exit_code`).

It also lets a command hold Ctrl-C over a few lines that must not be cut in two (watch prints a
change and saves its checkpoint; `watch --exec` lets its handler finish a batch): the interrupt
waits until they are done. A second Ctrl-C while one is held interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any

from evstream.errors import ExitCode, Interrupted, Terminated

REDELIVER_AFTER = 0.02  # seconds: a finalizer is short; the interrupt comes again after it


class CtrlC:
    """evstream's SIGINT handler, installed over Python's own in the main thread."""

    def __init__(self) -> None:
        self.holding = 0
        self.pending = False
        self.installs = 0
        self.previous: Any = None
        self.previous_term: Any = None
        self.terminated = False  # the last stop asked for was SIGTERM, not Ctrl-C
        # Called (in the main thread) when a Ctrl-C is held back, e.g. to say what it waits for.
        self.on_hold: Any = None
        # `with CTRL_C.held:` - Ctrl-C during the block waits until the block is done, then
        # interrupts. An object, not a generator context manager: watch holds it per change.
        self.held = _Held(self)

    def __enter__(self) -> CtrlC:
        """Install (nested uses share one installation); only over Python's default handler."""
        if self.installs:
            self.installs += 1
        elif threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self.previous = signal.signal(signal.SIGINT, self._handle)
                self.installs = 1
                self.terminated = False
                if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                    self.previous_term = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.installs:
            return
        self.installs -= 1
        if not self.installs:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
            if self.previous_term is not None:
                signal.signal(signal.SIGTERM, self.previous_term)
                self.previous_term = None
            self.pending = False

    @property
    def exit_code(self) -> ExitCode:
        """130 after Ctrl-C, 143 after SIGTERM."""
        return ExitCode.TERMINATED if self.terminated else ExitCode.INTERRUPTED

    def stopped(self, what: str) -> Interrupted:
        """The error that ends a command stopped by Ctrl-C or SIGTERM, saying what was done."""
        if self.terminated:
            return Terminated(f"terminated (SIGTERM): {what}")
        return Interrupted(f"interrupted: {what}")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            self.terminated = True
        if self.holding:
            if self.pending:  # a second Ctrl-C while held: stop now
                raise KeyboardInterrupt
            self.pending = True
            if self.on_hold is not None:
                self.on_hold()
            return
        if in_finalizer(frame):
            again = threading.Timer(REDELIVER_AFTER, redeliver, (signum,))
            again.daemon = True
            again.start()
            return
        raise KeyboardInterrupt


class _Held:
    """CtrlC.held: counts the blocks holding Ctrl-C; when the last ends, acts on one held back."""

    __slots__ = ("ctrl_c",)

    def __init__(self, ctrl_c: CtrlC) -> None:
        self.ctrl_c = ctrl_c

    def __enter__(self) -> None:
        self.ctrl_c.holding += 1

    def __exit__(self, *exc: object) -> None:
        ctrl_c = self.ctrl_c
        ctrl_c.holding -= 1
        if not ctrl_c.holding and ctrl_c.pending:
            ctrl_c.pending = False
            raise KeyboardInterrupt


def in_finalizer(frame: FrameType | None) -> bool:
    """Whether Python is running a `__del__`, where an exception is printed and dropped."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def redeliver(signum: int) -> None:
    """The signal again, to the main thread (so a blocking call there is interrupted too).

    Not once the handler is gone: the command has ended by then, and Python's own handler would
    raise the interrupt wherever teardown is, a pymongo session's `__del__` say, printing a
    traceback."""
    if not CTRL_C.installs:
        return
    with contextlib.suppress(ProcessLookupError, RuntimeError):
        signal.pthread_kill(threading.main_thread().ident or 0, signum)


CTRL_C = CtrlC()  # one handler per process: the CLI installs it, watch holds it while saving
