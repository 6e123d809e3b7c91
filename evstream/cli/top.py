"""evstream top: a live view of the log and its consumers (docs/operating.md)."""

import time
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from evstream.cli.app import app
from evstream.cli.env import running
from evstream.errors import InvalidInput


@app.command()
def top(
    ctx: typer.Context,
    interval: Annotated[
        float,
        typer.Option("--interval", metavar="SECONDS", help="Seconds between refreshes."),
    ] = 1.0,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="One frame (one JSON object with -o json) after one interval, then exit.",
        ),
    ] = False,
) -> None:
    """Show the log and its consumers live: the log's size, append rate and newest event; each
    watch checkpoint, part, follower and projection with its state (live, idle, behind,
    stalled, dead, stopped), position, lag in events and time, rate, dead letters and where it
    runs, worst first. q quits; Ctrl-C too.

    Piped (or with -o json): one JSON object per refresh.

    Examples:

    \b
      evstream top
      evstream top --once
      evstream top -o json --interval 5 | jq '.consumers[] | select(.state == "dead")'
    """
    with running(ctx) as env:
        if not 0.05 <= interval <= 3600:
            raise InvalidInput("--interval must be between 0.05 and 3600 seconds")
        from evstream.monitor import Monitor

        out = env.output
        monitor = Monitor(env.store())
        monitor.snapshot()  # the first look: rates come from the next one
        try:
            if once or not (out.to_terminal and not out.json):
                while True:
                    time.sleep(interval)
                    out.result(monitor.snapshot(), lambda s: _frame(s, None, out.width))
                    if once:
                        return
            from evstream.top_view import run_live

            run_live(
                out.out,
                lambda: _frame(monitor.snapshot(), interval, out.width),
                interval=interval,
                clock=time.monotonic,
            )
        except KeyboardInterrupt:
            from evstream.interrupts import CTRL_C

            if CTRL_C.terminated:
                raise  # SIGTERM: 143, as every command
            return  # Ctrl-C is how a live view ends: exit 0


def _frame(snapshot: Mapping[str, Any], interval: float | None, width: int | None) -> Any:
    """One frame for a person (rich is loaded only for it)."""
    from evstream.top_view import top_view

    return top_view(snapshot, interval=interval, width=width)
