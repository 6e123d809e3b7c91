"""evstream check: the log's health, read only; with --consumers, the consumers' health."""

from typing import Annotated, Any

import typer

from evstream.cli.app import app
from evstream.cli.env import running
from evstream.errors import ExitCode, InvalidInput


@app.command()
def check(
    ctx: typer.Context,
    consumers: Annotated[
        bool,
        typer.Option(
            "--consumers",
            help="Check the consumers (watch checkpoints, their parts, rebuild --follow) "
            "instead of the log: lag, dead letters, signs of life.",
        ),
    ] = False,
    max_lag: Annotated[
        str | None,
        typer.Option(
            "--max-lag",
            metavar="N|DURATION",
            help="With --consumers: the most events (1000) or time (30s, 5m, 1h) a consumer "
            "may be behind the newest event [default: 5m].",
            show_default=False,
        ),
    ] = None,
    max_dead_letters: Annotated[
        int | None,
        typer.Option(
            "--max-dead-letters",
            metavar="N",
            help="With --consumers: the most dead letters a consumer may have [default: 0].",
            show_default=False,
        ),
    ] = None,
    stale: Annotated[
        str | None,
        typer.Option(
            "--stale",
            metavar="DURATION",
            help="With --consumers: how long a consumer that did not stop cleanly may go "
            "without a sign of life [default: 6 of its heartbeats, 30s].",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", metavar="NAME", help="With --consumers: only this consumer (all its parts)."
        ),
    ] = None,
) -> None:
    """Check the log's health: documents that are not events, version gaps and duplicates, ts
    going backwards, indexes, evstream's own collections. Reads only; writes nothing.

    With --consumers, check each consumer instead: one finding per consumer that is behind by
    more than --max-lag, has more than --max-dead-letters, or shows no sign of life for
    --stale without having stopped cleanly.

    Exits 0 when healthy and 7 when it found problems, each with its fix.

    Examples:

    \b
      evstream check
      evstream check -o json | jq '.findings[].fix'
      evstream check --consumers --max-lag 10000 --stale 2m
    """
    with running(ctx) as env:
        out = env.output
        if consumers:
            from evstream.monitor import Monitor, check_consumers, thresholds

            limits = thresholds(max_lag, max_dead_letters, stale, name)
            report = check_consumers(Monitor(env.store()).snapshot(), limits)
            out.result(report, _consumers_view)
            if report["findings"]:
                raise typer.Exit(ExitCode.PROBLEMS_FOUND)
            return
        given = [
            flag
            for flag, value in (
                ("--max-lag", max_lag),
                ("--max-dead-letters", max_dead_letters),
                ("--stale", stale),
                ("--name", name),
            )
            if value is not None
        ]
        if given:
            raise InvalidInput(f"{given[0]} goes with --consumers")
        from evstream.check import Check
        from evstream.writer import renderer

        checking = Check(env.store())
        with out.progress("checking the log", total=checking.total or None) as advance:
            report = checking.run(advance)
        out.result(report.as_dict(), renderer("check_view"))
        if not report.healthy:
            raise typer.Exit(ExitCode.PROBLEMS_FOUND)


def _consumers_view(report: dict[str, Any]) -> Any:
    """check --consumers for a person (rich is loaded only for it)."""
    from evstream.top_view import consumers_check_view

    return consumers_check_view(report)
