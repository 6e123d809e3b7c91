"""evstream watch: follow a collection's changes, printed or handed to --exec."""

from typing import Annotated

import typer

from evstream.cli.app import app
from evstream.cli.env import running
from evstream.cli.options import Op, complete_checkpoints
from evstream.errors import InvalidInput


@app.command()
def watch(
    ctx: typer.Context,
    collection: Annotated[
        str, typer.Argument(help="Collection to follow.", show_default=True)
    ] = "events",
    event_type: Annotated[
        list[str] | None,
        typer.Option(
            "--type", "-t", metavar="<str>", help="Only events of this type (repeatable)."
        ),
    ] = None,
    stream: Annotated[
        list[str] | None,
        typer.Option(
            "--stream", "-s", metavar="<str>", help="Only events of this stream (repeatable)."
        ),
    ] = None,
    op: Annotated[
        list[Op] | None,
        typer.Option("--op", case_sensitive=False, help="Only these operations (repeatable)."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="now (default), start (replay what is there, then live), or an ISO-8601 time "
            "(events with ts at or after it; local time without an offset).",
            show_default=False,
        ),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            "--checkpoint",
            "-c",
            autocompletion=complete_checkpoints,
            help="Save progress under this name; restarted with it, the watch continues "
            "where it stopped.",
        ),
    ] = None,
    reset_checkpoint: Annotated[
        bool,
        typer.Option(
            "--reset-checkpoint", help="Forget the checkpoint's position first, then use --from."
        ),
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Exit after N changes.")
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            "--idle-timeout", min=0.0, help="Exit after this many seconds without a change."
        ),
    ] = None,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Show secret-looking fields unmasked.")
    ] = False,
    no_follow: Annotated[
        bool,
        typer.Option(
            "--no-follow",
            help="Show what matches up to now, then exit 0 (like tail without -f).",
        ),
    ] = False,
    exec_command: Annotated[
        str | None,
        typer.Option(
            "--exec",
            metavar="CMD",
            help="Run CMD (through the shell) on each batch of changes, as JSON lines on its "
            "stdin; the checkpoint moves past a batch only when CMD exits 0 (at least once).",
            rich_help_panel="Handlers (--exec)",
        ),
    ] = None,
    batch: Annotated[
        int,
        typer.Option(
            "--batch", min=1, help="Changes per run of CMD.", rich_help_panel="Handlers (--exec)"
        ),
    ] = 100,
    batch_wait: Annotated[
        float,
        typer.Option(
            "--batch-wait",
            min=0.0,
            help="Seconds a batch may wait to fill while live.",
            rich_help_panel="Handlers (--exec)",
        ),
    ] = 1.0,
    retries: Annotated[
        int,
        typer.Option(
            "--retries",
            min=0,
            help="Runs of CMD after a failed one, with backoff.",
            rich_help_panel="Handlers (--exec)",
        ),
    ] = 5,
    exec_timeout: Annotated[
        float | None,
        typer.Option(
            "--exec-timeout",
            min=0.001,
            help="A run of CMD that takes longer is killed and counts as failed.",
            rich_help_panel="Handlers (--exec)",
        ),
    ] = None,
    on_failure: Annotated[
        str,
        typer.Option(
            "--on-failure",
            metavar="stop|dead-letter",
            help="After the retries: stop (exit 6) or set the batch aside in "
            "evstream_dead_letters and go on.",
            rich_help_panel="Handlers (--exec)",
        ),
    ] = "stop",
    partition: Annotated[
        str | None,
        typer.Option(
            "--partition",
            metavar="I/N",
            help="Only the streams in part I of N (with --checkpoint): N watchers share the "
            "log like a consumer group.",
        ),
    ] = None,
    retry_backoff: Annotated[float, typer.Option("--retry-backoff", hidden=True)] = 0.5,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Pretty output: each document whole, pretty-printed under its line."
        ),
    ] = False,
    poll: Annotated[bool, typer.Option("--poll", hidden=True)] = False,
    canonical: Annotated[
        bool,
        typer.Option(
            "--canonical",
            help="JSON output: a mapped log's events as canonical events (_id, stream, version, "
            "type, data, meta, ts), not as stored (docs/adopting.md).",
        ),
    ] = False,
    upcast: Annotated[
        bool,
        typer.Option(
            "--upcast",
            help="Show events as the upcasters of the projection modules make them (canonical "
            "events); without it, output is as stored. --exec handlers always get them upcast.",
        ),
    ] = False,
    module: Annotated[
        str | None,
        typer.Option(
            "--module",
            "-m",
            help="Python file or importable module with upcasters (for --exec and --upcast), "
            "besides EVSTREAM_PROJECTIONS and the configured projections.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Follow a collection's changes live: one line each on a terminal, JSON lines when piped.

    History then live with --from start (or a time), with no gap and no duplicate;
    --checkpoint NAME survives kill -9; --no-follow reads history and exits. Ctrl-C stops
    (exit 130).

    Examples:

    \b
      evstream watch
      evstream watch --type login --stream alice --from start
      evstream watch --checkpoint mailer --exec ./send-mails
      evstream watch --from start --stream alice --no-follow
      evstream watch sessions --limit 1
    """
    with running(ctx) as env:
        from evstream.delivery import ExecOptions, check_parts, partition_checkpoint
        from evstream.events import parse_partition
        from evstream.output import ChangePrinter, handler_line
        from evstream.storage.delivery import checkpoint_names
        from evstream.watching import (
            Change,
            WatchOptions,
            check_ops,
            delivery_hooks,
            exec_handler,
            parse_start,
            upcast_changes,
        )
        from evstream.watching import watch as follow

        options = WatchOptions(
            collection=collection,
            types=list(event_type or []),
            streams=list(stream or []),
            ops=check_ops([o.value for o in op or []]),
            start=parse_start(start),
            start_given=start is not None,
            checkpoint=checkpoint,
            reset_checkpoint=reset_checkpoint,
            limit=limit,
            idle_timeout=idle_timeout,
            poll=poll,
            follow=not no_follow,
        )
        part = parse_partition(partition)
        if partition is not None and checkpoint is None:
            raise InvalidInput("--partition needs --checkpoint NAME: each part keeps its own")
        if part is not None:
            assert checkpoint is not None
            options.checkpoint = partition_checkpoint(checkpoint, part)
        if exec_command is not None:
            exec_options = ExecOptions(
                command=exec_command,
                batch=batch,
                batch_wait=batch_wait,
                retries=retries,
                timeout=exec_timeout,
                on_failure=on_failure,
                checkpoint=options.checkpoint,
                partition=part,
                backoff=retry_backoff,
            )
            exec_options.check()
        elif checkpoint is not None:
            env.broken_pipe = (
                f"the reader of stdout went away; checkpoint {checkpoint!r} is saved past the "
                "last changes written, and up to the last few of them may not have been "
                "processed (for a handler that must not miss any, use --exec CMD)"
            )
        upcasters = None
        if exec_command is not None or upcast or module is not None:
            from evstream.projections import load_upcasters

            upcasters = load_upcasters(module, configured=env.settings.projections) or None
        store = env.store()
        if checkpoint is not None:
            check_parts(checkpoint, part, checkpoint_names(store))
        printer = ChangePrinter(
            env.output, show_secrets=show_secrets, full=full, canonical=canonical or upcast
        )
        out = env.output
        upcasting = (
            (lambda change: change)
            if upcasters is None
            else upcast_changes(upcasters, store.log_name, store.fieldmap.versioned)
        )
        if exec_command is None:
            hooks = delivery_hooks(
                (lambda change: printer(upcasting(change))) if upcast else printer,
                part=part,
                notice=out.notice,
                warning=out.warning,
                written=printer.written,
                log=store.log_name,
            )
        else:
            executor = exec_handler(store, exec_options, notice=out.notice)

            def hand_over(change: Change) -> bool:
                ident = (change.doc or {}).get("_id", change.key.get("_id"))
                line = handler_line(upcasting(change), show_secrets=show_secrets)
                return executor.add(line, ident)

            hooks = delivery_hooks(
                hand_over,
                part=part,
                executor=executor,
                notice=out.notice,
                warning=out.warning,
                log=store.log_name,
            )
            executor.beat = lambda: hooks.beat()  # the watch's liveness while CMD runs
        try:
            follow(store, options, hooks)
        finally:
            printer.close()
