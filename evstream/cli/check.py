"""evstream check: the log's health, read only."""

import typer

from evstream.cli.app import app
from evstream.cli.env import running
from evstream.errors import ExitCode


@app.command()
def check(ctx: typer.Context) -> None:
    """Check the log's health: documents that are not events, version gaps and duplicates, ts
    going backwards, indexes, evstream's own collections. Reads only; writes nothing.

    Exits 0 when healthy and 7 when it found problems, each with its fix.

    Examples:

    \b
      evstream check
      evstream check -o json | jq '.findings[].fix'
    """
    with running(ctx) as env:
        from evstream.check import Check
        from evstream.writer import renderer

        out = env.output
        checking = Check(env.store())
        with out.progress("checking the log", total=checking.total or None) as advance:
            report = checking.run(advance)
        out.result(report.as_dict(), renderer("check_view"))
        if not report.healthy:
            raise typer.Exit(ExitCode.PROBLEMS_FOUND)
