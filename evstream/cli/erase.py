"""evstream erase: a stream removed everywhere evstream keeps it (an erasure request)."""

import sys
from typing import Annotated

import typer

from evstream.cli.app import app
from evstream.cli.env import running
from evstream.errors import InvalidInput


@app.command()
def erase(
    ctx: typer.Context,
    streams: Annotated[
        list[str],
        typer.Argument(metavar="STREAM…", help="The streams to erase.", show_default=False),
    ],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask (needed when stdin is not a terminal).")
    ] = False,
) -> None:
    """Erase streams for good, everywhere evstream keeps them (an erasure request).

    Deletes their events, projection documents, checkpoint window ids and dead letters, and
    leaves a tombstone (a keyed hash of the name, not the name) that refuses later publishes to
    them (exit 5, unless publish --allow-erased).

    Asks first on a terminal; elsewhere it needs --yes. Names the archive files that may still
    hold the streams: erasing those is beyond evstream's reach. Run it again after an
    interruption and it finishes the job.

    Examples:

    \b
      evstream erase alice
      evstream erase alice bob --yes -o json
    """
    with running(ctx) as env:
        if not yes:
            if not sys.stdin.isatty():
                raise InvalidInput(
                    "erase deletes for good and stdin is not a terminal to ask on; add --yes"
                )
            names = ", ".join(streams)
            if not typer.confirm(
                f"Erase {names} everywhere evstream keeps it? This cannot be undone"
            ):
                env.output.notice("nothing was erased")
                raise typer.Exit(1)
        from evstream.erasing import erase_streams
        from evstream.writer import renderer

        store = env.store()
        report = erase_streams(store, streams, notice=env.output.notice)
        out = env.output
        out.result(report, renderer("erase_view"))
        for item in report["streams"]:
            if item.get("archive_files"):
                out.warning(
                    f"archive files may still hold {item['stream']}, and evstream cannot erase "
                    f"files (delete or rewrite them): {', '.join(item['archive_files'])}"
                )
