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

    With -o prometheus: the log's size and newest age, and each consumer's and projection's
    lag, rate, dead letters and liveness in the Prometheus text format, from a few cheap
    queries (for node_exporter's textfile collector or a sidecar).

    Examples:

    \b
      evstream status
      evstream --db shop status --output json | jq .counts
      evstream status -o prometheus > /var/lib/node_exporter/evstream.prom
    """
    with running(ctx) as env:
        from evstream.overview import DEFAULT_BUCKETS, gather
        from evstream.writer import renderer

        out = env.output
        store = env.store()
        if out.mode == "prometheus":  # the cheap figures only: no scan of the log
            from evstream.monitor import Monitor
            from evstream.top_view import prometheus_text, top_view

            out.result(Monitor(store).snapshot(), top_view, prometheus=prometheus_text)
            return
        # The activity chart takes one column per bucket beside labels and notes.
        width = out.width
        buckets = DEFAULT_BUCKETS if width is None else max(12, min(60, width - 34))
        home = env.settings.data_home if store.embedded else None
        info = gather(store, home=home, estimate=estimate, max_buckets=buckets)
        # Documents that are not events: the view's "Not events" row (JSON: not_events), not
        # a warning on stderr as well.
        out.result(info, renderer("status_view"))
