"""Option types and choices that more than one command shares, and shell completion of names."""

import enum
from typing import Annotated

import typer


class OutputMode(str, enum.Enum):
    """--output's choices."""

    auto = "auto"
    pretty = "pretty"
    json = "json"
    prometheus = "prometheus"  # status only: the Prometheus text format


class Op(str, enum.Enum):
    """watch --op's choices."""

    insert = "insert"
    update = "update"
    replace = "replace"  # type: ignore[assignment]  # the member, not str.replace
    delete = "delete"


TcpOption = Annotated[
    bool | None,
    typer.Option(
        "--tcp/--no-tcp",
        help="Also listen on loopback TCP, for clients that need a port (kept across "
        "restarts) [default: as it was last started].",
        show_default=False,
    ),
]


IncrementalOption = Annotated[
    bool,
    typer.Option(
        "--incremental",
        "-i",
        help="Apply only what the log gained since the last rebuild (a full rebuild when "
        "there is none, when events landed behind it, or when the projection's version changed).",
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Say what would change (created, updated, removed)."),
]
MarginOption = Annotated[
    float,
    typer.Option(
        "--margin",
        min=0,
        max=7 * 24 * 3600,
        help="Seconds of the log that the next --incremental reads again, for events that "
        "land late or from clocks slightly behind.",
    ),
]
PartitionOption = Annotated[
    str | None,
    typer.Option(
        "--partition",
        metavar="I/N",
        help="Rebuild only the streams (a keyed projection: the keys) in part I of N, by a "
        "stable hash, so N workers share one rebuild; each part keeps its own checkpoint.",
        show_default=False,
    ),
]
FollowOption = Annotated[
    bool,
    typer.Option(
        "--follow",
        help="Catch up, then keep the projection current from the change stream until "
        "Ctrl-C (the checkpoint is the one --incremental continues from).",
    ),
]
IdleTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--idle-timeout",
        min=0,
        help="With --follow: stop after this many seconds without a new event.",
        show_default=False,
    ),
]
BatchSizeOption = Annotated[
    int | None, typer.Option("--batch-size", min=1, max=100_000, hidden=True)
]


def complete_projections(ctx: typer.Context, incomplete: str) -> list[str]:
    """Projection names for shell completion: the built-ins, the configured modules' and
    --module's (their modules are imported; a module that fails to import offers nothing)."""
    try:
        from evstream.config import resolve_settings
        from evstream.projections import known_projections, modules_to_load

        context = ctx.find_root().params.get("context")
        configured = resolve_settings({"context": context}, warn=lambda _: None).projections
        names = known_projections(modules_to_load(ctx.params.get("module"), configured=configured))
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return []
    return sorted(name for name in names if name.startswith(incomplete))


def complete_checkpoints(ctx: typer.Context, incomplete: str) -> list[str]:
    """Saved checkpoint names for shell completion, from the configured server, or from the
    embedded dev store if it runs (never started for this); nothing within half a second."""
    from evstream.config import resolve_settings

    root = ctx.find_root()
    given = {key: root.params.get(key) for key in ("uri", "db", "context")}
    try:
        settings = resolve_settings(given, warn=lambda _: None)  # as the command will run
        uri = settings.uri
        if not uri:
            from evstream.embedded import current_uri

            uri = current_uri(settings.data_home)
        if not uri:
            return []
        from evstream.storage.delivery import checkpoint_names_at

        names = checkpoint_names_at(uri, settings.db, timeout_ms=500)
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return []
    return sorted(name for name in names if name.startswith(incomplete))
