"""evstream rebuild NAME (and rebuild-sessions, which is `rebuild sessions`)."""

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from evstream.cli.app import app
from evstream.cli.env import Env, running
from evstream.cli.options import (
    BatchSizeOption,
    DryRunOption,
    FollowOption,
    IdleTimeoutOption,
    IncrementalOption,
    MarginOption,
    PartitionOption,
    complete_projections,
)
from evstream.errors import InvalidInput


@app.command("rebuild")
def rebuild_projection(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The projection, e.g. sessions or carts.",
            autocompletion=complete_projections,
        ),
    ],
    module: Annotated[
        str | None,
        typer.Option(
            "--module",
            "-m",
            help="Python file or importable module defining the projection; "
            "EVSTREAM_PROJECTIONS may list more modules, comma-separated.",
            show_default=False,
        ),
    ] = None,
    incremental: IncrementalOption = False,
    dry_run: DryRunOption = False,
    margin: MarginOption = 10.0,
    partition: PartitionOption = None,
    follow: FollowOption = False,
    idle_timeout: IdleTimeoutOption = None,
    batch_size: BatchSizeOption = None,
) -> None:
    """Rebuild a projection from the event log, online: readers never see it empty.

    A projection is defined in Python with evstream.projections.Projection (see the README).
    Safe to interrupt (even kill -9): the next run makes the projection exact.

    Examples:

    \b
      evstream rebuild carts --module carts.py
      EVSTREAM_PROJECTIONS=shop.projections evstream rebuild carts --incremental
      evstream rebuild carts -m carts.py --partition 2/4
      evstream rebuild carts -m carts.py --follow
    """
    with running(ctx) as env:
        from evstream.projections import load_projection

        _run_projection(
            env,
            load_projection(name, module, configured=env.settings.projections),
            incremental,
            dry_run,
            margin,
            partition,
            follow,
            idle_timeout,
            batch_size,
        )


def rebuild_sessions(ctx: typer.Context, **options: Any) -> None:
    """Rebuild the sessions projection from the event log (evstream rebuild sessions).

    Readers never see it empty. Safe to interrupt (even kill -9): the next run makes the
    projection exact.

    Examples:

    \b
      evstream rebuild-sessions
      evstream rebuild-sessions --incremental
      evstream rebuild-sessions --dry-run -o json
    """
    with running(ctx) as env:
        from evstream.sessions import projection

        _run_projection(env, projection, **options)


def _options_but(command: Callable[..., None], *names: str) -> inspect.Signature:
    """`command`'s signature without the parameters `names`: Typer reads a command's options
    from its signature, so an alias built on it takes the same options, defined once."""
    signature = inspect.signature(command)
    kept = [p for p in signature.parameters.values() if p.name not in names]
    return signature.replace(parameters=kept)


# `rebuild-sessions` is `rebuild sessions`: the built-in projection, and rebuild's options.
rebuild_sessions.__signature__ = _options_but(rebuild_projection, "name", "module")  # type: ignore[attr-defined]
app.command("rebuild-sessions")(rebuild_sessions)


def _run_projection(
    env: Env,
    projection: Any,
    incremental: bool,
    dry_run: bool,
    margin: float,
    partition: str | None,
    follow: bool,
    idle_timeout: float | None,
    batch_size: int | None,
) -> None:
    """`rebuild NAME` and `rebuild-sessions`: one run, or catching up and following."""
    if follow:
        _follow(env, projection, dry_run, margin, partition, idle_timeout)
    else:
        _rebuild(env, projection, incremental, dry_run, margin, partition, batch_size)


def _follow(
    env: Env,
    projection: Any,
    dry_run: bool,
    margin: float,
    partition: str | None,
    idle_timeout: float | None,
) -> None:
    """Catch up, follow the change stream, and show what was applied when it stops."""
    from evstream.events import parse_partition
    from evstream.projection import follow_projection
    from evstream.writer import renderer

    if dry_run:
        raise InvalidInput("--follow writes as events arrive; --dry-run is for a single run")
    part = parse_partition(partition)
    out = env.output
    report = follow_projection(
        env.store(),
        projection,
        part=part,
        margin=margin,
        idle_timeout=idle_timeout,
        notice=out.notice,
        warning=out.warning,
    )
    out.result(report.as_dict(), renderer("follow_summary_text"))


def _rebuild(
    env: Env,
    projection: Any,
    incremental: bool,
    dry_run: bool,
    margin: float,
    partition: str | None,
    batch_size: int | None,
) -> None:
    """Plan, run with progress, and show the summary of a rebuild."""
    from evstream.events import parse_partition
    from evstream.projection import run_rebuild
    from evstream.writer import renderer

    part = parse_partition(partition)
    out = env.output
    report = run_rebuild(
        env.store(),
        projection,
        incremental=incremental,
        dry_run=dry_run,
        margin=margin,
        part=part,
        batch_size=batch_size,
        with_total=out.interactive,  # only a progress bar needs it
        progress=out.progress,
        status=out.status,
        notice=out.notice,
        warning=out.warning,
    )
    out.result(report.as_dict(), renderer("rebuild_summary_text"))
