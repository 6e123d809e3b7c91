"""evstream archive: old events moved from the log to a file that publish --file restores."""

from typing import Annotated

import typer

from evstream.cli.app import app
from evstream.cli.env import running


@app.command()
def archive(
    ctx: typer.Context,
    before: Annotated[
        str,
        typer.Option(
            "--before",
            metavar="TIME|AGE",
            help="Archive events with ts before this ISO-8601 time, or older than an age "
            "(90d, 12h).",
            show_default=False,
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="PATH",
            help="The NDJSON file to write (gzip when it ends in .gz); must not exist yet.",
            show_default=False,
        ),
    ],
    stream: Annotated[
        list[str] | None,
        typer.Option("--stream", "-s", help="Only this stream (repeatable).", show_default=False),
    ] = None,
    module: Annotated[
        str | None,
        typer.Option(
            "--module",
            "-m",
            help="Python file or module defining projections to keep right (besides "
            "EVSTREAM_PROJECTIONS' and the built-in sessions).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say how many events, streams and bytes would move.")
    ] = False,
) -> None:
    """Move old events out of the log into an exact-copy NDJSON file (publish --file restores it).

    The events are deleted only once the file is complete, fsynced and read back with the right
    count and ids. Kill-safe: run the same command again and it finishes the same archive. Each
    projection's state at the archive's edge is kept, so full rebuilds give what they gave
    before (docs/lifecycle.md).

    Examples:

    \b
      evstream archive --before 2024-01-01T00:00:00Z --to 2023.ndjson.gz --dry-run
      evstream archive --before 90d --to old.ndjson.gz
      evstream archive --before 30d --stream alice --to alice-old.ndjson
    """
    with running(ctx) as env:
        from evstream.archiving import archive as run_archive
        from evstream.archiving import parse_before
        from evstream.projections import load_projections
        from evstream.storage import ensure_indexes
        from evstream.writer import renderer

        moment = parse_before(before)
        projections = load_projections(module, configured=env.settings.projections)
        out = env.output
        store = env.store()
        if not dry_run:
            ensure_indexes(store)
        with out.progress("archiving", counts="events") as advance:
            report = run_archive(
                store,
                before=moment,
                path=to,
                streams=stream,
                projections=projections,
                dry_run=dry_run,
                progress=advance,
                notice=out.notice,
            )
        out.result(report.as_dict(), renderer("archive_view"))
