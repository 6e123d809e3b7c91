"""evstream status: what is in the store, projection lag and checkpoints."""

from typing import Annotated

import typer

from evstream.cli.app import app
from evstream.cli.env import running


@app.command()
def status(
    ctx: typer.Context,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate",
            help="Count from collection metadata instead of scanning the log (for huge logs); "
            "leaves out streams and types.",
        ),
    ] = False,
) -> None:
    """Show what is in the store, which server it is, projection lag and checkpoints.

    Counts, events by type, oldest and newest event, and a chart of events over time.

    Lag: how far the sessions projection and each saved watch checkpoint are behind the log.

    Examples:

    \b
      evstream status
      evstream --db shop status --output json | jq .counts
    """
    with running(ctx) as env:
        from evstream.overview import DEFAULT_BUCKETS, gather
        from evstream.writer import renderer

        out = env.output
        store = env.store()
        # The activity chart takes one column per bucket beside labels and notes.
        width = out.width
        buckets = DEFAULT_BUCKETS if width is None else max(12, min(60, width - 34))
        home = env.settings.data_home if store.embedded else None
        info = gather(store, home=home, estimate=estimate, max_buckets=buckets)
        # Documents that are not events: the view's "Not events" row (JSON: not_events), not
        # a warning on stderr as well.
        out.result(info, renderer("status_view"))
