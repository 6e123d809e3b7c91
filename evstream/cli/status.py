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

        out = env.output
        store = env.store()
        # The activity chart takes one column per bucket beside labels and notes.
        buckets = DEFAULT_BUCKETS if out.json else max(12, min(60, out.out.width - 34))
        home = env.settings.data_home if store.embedded else None
        info = gather(store, home=home, estimate=estimate, max_buckets=buckets)
        if info.get("not_events"):
            from evstream.events import Skipped

            skipped = Skipped(dict(info["not_events"]["kinds"]), info["not_events"]["sample_ids"])
            out.warning(skipped.line() or "")
        if out.json:
            out.emit(info)
        else:
            from evstream.output import status_view

            out.show(status_view(info))
