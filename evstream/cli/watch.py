"""evstream watch: follow a collection's changes, printed or handed to --exec."""

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from evstream.cli.app import app
from evstream.cli.env import Env, running
from evstream.cli.options import Op, complete_checkpoints
from evstream.errors import InvalidInput

if TYPE_CHECKING:
    from evstream.storage import Store
    from evstream.writer import Output


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
        from evstream.storage.delivery import checkpoint_names
        from evstream.watching import WatchOptions, check_ops, parse_start
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
        executor = None
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
        store = env.store()
        if checkpoint is not None:
            check_parts(checkpoint, part, checkpoint_names(store))
        if exec_command is not None:
            executor = _executor(env, store, exec_options)
        printer = _WatchPrinter(env.output, show_secrets=show_secrets, full=full)
        hooks = _watch_hooks(env, printer, show_secrets, executor, part)
        if executor is not None:
            executor.beat = lambda: hooks.beat()  # the watch's liveness while CMD runs
        try:
            follow(store, options, hooks)
        finally:
            printer.close()


def _executor(env: Env, store: "Store", options: Any) -> Any:
    """The --exec executor, its dead letters kept in the store."""
    from evstream.delivery import Executor
    from evstream.storage.delivery import dead_letter

    def set_aside(lines: list[str], ids: list[Any], attempt: Any, attempts: int) -> None:
        dead_letter(
            store, options.checkpoint, lines, ids, attempt.reason, attempts, attempt.last_stderr
        )

    return Executor(options, stderr=sys.stderr, notice=env.output.notice, dead_letter=set_aside)


def _watch_hooks(env: Env, printer: Any, show_secrets: bool, executor: Any, part: Any) -> Any:
    """Where watch's changes go: printed, or handed to --exec; only one part's with
    --partition."""
    from evstream.events import partition_of
    from evstream.output import json_line, watch_record
    from evstream.watching import Hooks

    out = env.output
    written: Callable[[], None] = lambda: None  # noqa: E731
    if executor is None:
        show = printer
        pending = lambda: False  # noqa: E731
        written = printer.written
    else:

        def show(c: Any) -> bool:
            record = watch_record(c.op, c.collection, c.key, c.doc, show_secrets=show_secrets)
            ident = (c.doc or {}).get("_id", c.key.get("_id"))
            return bool(executor.add(json_line(record), ident))

        pending = lambda: executor.pending  # noqa: E731

    others = [0]  # changes of other parts, handed over and passed by

    def figures(handed: int) -> dict[str, int]:
        """What the liveness reports (docs/operating.md): this part's changes only."""
        if executor is None:
            return {"handled": handed - others[0]}
        return {
            "handled": executor.delivered + executor.dead,
            "retries": executor.retries,
            "dead_letters": executor.dead,
        }

    if part is None:
        deliver = show
    else:

        def deliver(c: Any) -> bool | None:
            stream = (c.doc or {}).get("stream")
            owner = stream if isinstance(stream, str) else str(c.key.get("_id"))
            if partition_of(owner, part[1]) != part[0]:
                others[0] += 1
                return not pending()  # another part's: nothing to do, nothing to wait for
            return show(c)

    def flush(everything: bool) -> bool:
        if executor is None:
            return True
        if everything or executor.due():
            executor.flush()
        return not executor.pending

    return Hooks(
        deliver=deliver,
        notice=out.notice,
        warning=out.warning,
        pending=pending,
        flush=flush,
        batched=executor is not None,
        written=written,
        figures=figures,
    )


class _WatchPrinter:
    """Each change to stdout: a JSON line as it is, or a line of the pretty view."""

    def __init__(self, out: "Output", *, show_secrets: bool, full: bool) -> None:
        from evstream.output import WatchView, watch_record

        self.record = watch_record
        self.out = out
        self.show_secrets = show_secrets
        self.view = WatchView(show_secrets=show_secrets, full=full, width=out.out.width)
        # JSON lines into a file or pipe are flushed by `written`, which the watch calls before
        # it waits for anything (Hooks.written); on a terminal each line is flushed as written.
        self.buffered = out.json and not out.to_terminal

    def __call__(self, change: Any) -> None:
        out = self.out
        if out.json:
            out.emit(
                self.record(
                    change.op,
                    change.collection,
                    change.key,
                    change.doc,
                    show_secrets=self.show_secrets,
                ),
                flush=not self.buffered,
            )
            return
        update = change.update  # updateDescription, where the server gives one
        out.show(
            self.view.render(
                change.op, change.collection, change.key, change.doc, change.when, update=update
            )
        )

    def written(self) -> None:
        """Every line printed so far reaches the reader of stdout (Hooks.written)."""
        if self.buffered:
            self.out.flush()

    def close(self) -> None:
        """Say how many documents of events were not events (the pretty view only)."""
        summary = self.view.summary()
        if summary and not self.out.json:
            self.out.warning(summary)
