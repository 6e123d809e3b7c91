"""evstream redact: the secret rules applied again to events already in the log."""

from typing import Annotated

import typer

from evstream.cli.app import app
from evstream.cli.env import running
from evstream.cli.options import DryRunOption


@app.command()
def redact(
    ctx: typer.Context,
    keys: Annotated[
        list[str] | None,
        typer.Option(
            "--keys",
            metavar="K,…",
            help="More field names to redact wherever they occur (comma-separated, any case).",
            show_default=False,
        ),
    ] = None,
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            metavar="PATH",
            help="A field to redact by its dotted path, e.g. data.card.number (repeatable; "
            "list items are matched without an index).",
            show_default=False,
        ),
    ] = None,
    stream: Annotated[
        list[str] | None,
        typer.Option(
            "--stream", "-s", help="Only this stream's events (repeatable).", show_default=False
        ),
    ] = None,
    event_type: Annotated[
        list[str] | None,
        typer.Option(
            "--type", "-t", help="Only events of this type (repeatable).", show_default=False
        ),
    ] = None,
    dry_run: DryRunOption = False,
) -> None:
    """Redact secrets already stored: the secret rules applied again to events' data and meta.

    Values under secret-looking keys (password, token, api key …), --keys and --path become
    "[redacted]" in place; every other field of each event stays exactly as stored. Running it
    again changes nothing. The one exception to "the log is never updated" (docs/lifecycle.md).

    Examples:

    \b
      evstream redact --dry-run
      evstream redact --keys ssn,iban --path data.card.number
      evstream redact --stream alice --type signup
    """
    with running(ctx) as env:
        from evstream.redacting import Rules, redact_log
        from evstream.writer import renderer

        rules = Rules.parse(keys or [], path or [])
        out = env.output
        store = env.store()
        with out.progress("redacting", counts="events") as advance:
            report = redact_log(
                store, rules, streams=stream, types=event_type, dry_run=dry_run, progress=advance
            )
        out.result(report.as_dict(), renderer("redact_view"))
