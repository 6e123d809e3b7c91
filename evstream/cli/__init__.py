"""The evstream command line, one module per command (see docs/architecture.md).

`app` is the Typer app; importing this package registers every command on it. Heavy imports
(pymongo, bson, rich rendering) happen inside commands, so `--help` and shell completion stay
fast and never touch the network.
"""

import atexit
import contextlib
import os
import sys
import threading

from evstream.cli.app import app

# Importing a command's module registers it; `evstream --help` lists commands in this order.
# isort: off
from evstream.cli import publish, seed, server, watch, rebuild, status, check, top, bench, config, init  # noqa: F401,E501
from evstream.cli import archive, erase, redact  # noqa: F401
# isort: on

__all__ = ["app", "exit_now", "main"]


def main() -> None:
    """Entry point of the `evstream` command."""
    try:
        app(prog_name="evstream")
    except SystemExit as exc:
        exit_now(exc.code)
        raise


def exit_now(code: object) -> None:
    """End the process once its work is done, without tearing the interpreter down.

    Python's own exit frees every module and object one by one: 35-40 ms once pymongo, typer
    and rich are loaded, a fifth of a one-event publish (mypy's `hard_exit` skips it the same
    way). The atexit handlers still run and stdout and stderr are flushed first; returns (for
    the ordinary exit) when a thread that Python would wait for is still running, under a
    profiler or tracer, or when the output cannot be flushed (a closed pipe: the ordinary exit
    reports it as it always has).
    """
    if not (code is None or isinstance(code, int)):
        return
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return  # python -m cProfile, a debugger, coverage: they finish their work after main()
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError):  # what an atexit handler printed
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code or 0)
