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
    module: Annotated[
        str | None,
        typer.Option(
            "--module",
            "-m",
            help="Python file or module defining keyed projections whose keys to refold "
            "(besides EVSTREAM_PROJECTIONS').",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Erase streams for good, everywhere evstream keeps them (an erasure request).

    Deletes their events, projection documents, checkpoint window ids and dead letters, refolds
    the keys their events fed in keyed projections (which must be loaded: --module), and
    leaves a tombstone (a keyed hash of the name, not the name) that refuses later publishes to
    them (exit 5, unless publish --allow-erased).

    Asks first on a terminal; elsewhere it needs --yes. Names the archive files that may still
    hold the streams: erasing those is beyond evstream's reach. Run it again after an
    interruption and it finishes the job.

    Examples:

    \b
      evstream erase alice
      evstream erase alice bob --yes -o json
      evstream erase alice --yes --module tenants.py
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
        from evstream.projections import load_projections
        from evstream.writer import renderer

        projections = load_projections(module, configured=env.settings.projections)
        store = env.store()
        report = erase_streams(store, streams, projections=projections, notice=env.output.notice)
        out = env.output
        out.result(report, renderer("erase_view"))
        for item in report["streams"]:
            files = ", ".join(item.get("archive_files") or []) or "none recorded"
            if item.get("archive_files"):
                out.warning(
                    f"archive files may still hold {item['stream']}, and evstream cannot erase "
                    f"files (delete or rewrite them): {files}"
                )
            for name, n in (item.get("keyed_snapshots_dropped") or {}).items():
                out.warning(
                    f"keyed projection {name}: {n} key(s) lost the archived events folded with "
                    f"{item['stream']}'s (their snapshots held them and cannot be refolded "
                    "without the archive); to get them back, publish the archive files without "
                    f"its lines and rebuild {name} in full: {files}"
                )
