"""evstream publish: one event from options, or many from an NDJSON file or stdin."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from evstream.cli.app import app
from evstream.cli.env import Env, running
from evstream.errors import ExitCode, InvalidInput


@app.command()
def publish(
    ctx: typer.Context,
    event_type: Annotated[
        str | None,
        typer.Argument(metavar="TYPE", help="Event type, e.g. login.", show_default=False),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option("--stream", "-s", help="Stream the event belongs to, e.g. alice."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            metavar="JSON|@FILE|-",
            help="Payload: a JSON object, @FILE to read it from a file, - from stdin.",
        ),
    ] = None,
    meta: Annotated[
        str | None,
        typer.Option("--meta", metavar="JSON|@FILE|-", help="Metadata: as --data."),
    ] = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="Event id (idempotency key); generated if absent.")
    ] = None,
    expected_version: Annotated[
        int | None,
        typer.Option(
            "--expected-version",
            "-e",
            min=0,
            help="Append only if the stream is at this version (0: a new stream); else exit 5.",
        ),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file", "-f", help="NDJSON file of events, one object per line; - for stdin."
        ),
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="With --file: write the good lines, report the bad."),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="With --file: check every line, list the bad ones, write nothing."
        ),
    ] = False,
    keep_secrets: Annotated[
        bool, typer.Option("--keep-secrets", help="Store secret-looking fields as given.")
    ] = False,
    allow_erased: Annotated[
        bool,
        typer.Option("--allow-erased", help="Publish to streams erased with 'evstream erase'."),
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=100_000, hidden=True)
    ] = 1000,
    batch_wait: Annotated[
        float,
        typer.Option(
            "--batch-wait",
            min=0,
            max=3600,
            metavar="SECONDS",
            help="With --file from a pipe: store an event within this long, full batch or not.",
        ),
    ] = 0.1,
) -> None:
    """Append events to the log: one from options, or many from an NDJSON file or stdin.

    Examples:

    \b
      evstream publish login --stream alice --data '{"username": "alice"}'
      evstream publish profile.updated -s alice -d '{"email": "a@example.org"}' --expected-version 2
      evstream publish signup -s carol --data @payload.json
      evstream publish --file events.ndjson --check
      cat events.ndjson | evstream publish --file -
    """
    with running(ctx) as env:
        if check and file is None:
            raise InvalidInput("--check applies to --file only")
        if check and skip_invalid:
            raise InvalidInput("--check writes nothing; --skip-invalid is for writing")
        if file is not None:
            if event_type or stream or data or meta or event_id or expected_version is not None:
                raise InvalidInput(
                    "--file takes events from the file; TYPE, --stream, --data, --meta, --id and "
                    "--expected-version are for a single event"
                )
            if check:
                _check_file(env, file)
            else:
                _publish_file(
                    env,
                    file,
                    skip_invalid,
                    keep_secrets,
                    batch_size,
                    batch_wait,
                    allow_erased=allow_erased,
                )
            return
        if skip_invalid:
            raise InvalidInput("--skip-invalid applies to --file only")
        if event_type is None or stream is None:
            raise InvalidInput("give an event TYPE and --stream, or --file PATH")
        if data == "-" and meta == "-":
            raise InvalidInput("--data and --meta cannot both read stdin")
        from evstream.events import parse_json_object
        from evstream.publishing import append_checked, checked_event
        from evstream.storage import ensure_indexes
        from evstream.storage.codec import loads
        from evstream.writer import renderer

        out = env.output
        event = checked_event(
            {
                "type": event_type,
                "stream": stream,
                "expected_version": expected_version,
                "data": parse_json_object(_option_text(data, "--data"), "--data", loads)
                if data is not None
                else {},
                "meta": parse_json_object(_option_text(meta, "--meta"), "--meta", loads)
                if meta is not None
                else None,
                "id": event_id,
            },
            keep_secrets=keep_secrets,
            warning=out.warning,
        )
        store = env.store()
        ensure_indexes(store)
        if not allow_erased:
            from evstream.erasing import ErasedGuard

            ErasedGuard(store)([event])
        result = append_checked(store, event)
        if result.duplicate:
            out.notice(f"event {result.doc['_id']} was already stored; nothing was written")
        out.result(result.doc, renderer("event_line"))


def _option_text(value: str, option: str) -> str:
    """An option's JSON: as given, from @FILE, or from stdin for - (as curl and httpie read it)."""
    if value == "-":
        if sys.stdin.isatty():
            raise InvalidInput(f"{option} - reads stdin, which is a terminal; pipe the JSON in")
        try:
            return sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"{option} -: stdin is not UTF-8 text (byte {exc.start + 1})"
            ) from None
    if not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{option} {value}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{option} {value}: a directory, not a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{option} {value}: cannot read it ({exc})") from None


CHECK_LIST_LIMIT = 20


def _check_file(env: Env, path: str) -> None:
    """publish --file --check: every line checked, the bad ones listed, nothing written."""
    from evstream.publishing import check_input, open_input

    out = env.output
    with open_input(path) as (source, size):
        found = check_input(env.store(), source, size, progress=out.progress)
    listed = found.bad[:CHECK_LIST_LIMIT]

    def view(_: Any) -> Any:
        from evstream.output import summary_text

        for line in listed:
            out.error(line)
        if len(found.bad) > len(listed):
            out.error(f"… and {plural_text(len(found.bad) - len(listed), 'more bad line')}")
        return summary_text(
            "Checked, nothing written",
            {
                ("line", "lines"): found.lines,
                ("event", "events"): found.events,
                ("bad line", "bad lines"): len(found.bad),
            },
        )

    rows = [{"bad": line} for line in listed]
    out.result([*rows, {**found.as_dict(), "listed": len(listed)}], view)
    if found.bad:
        raise typer.Exit(ExitCode.USAGE)


def plural_text(n: int, noun: str) -> str:
    """'1 more bad line', '3 more bad lines'."""
    return f"{n:,} {noun}{'s' * (n != 1)}"


def _publish_file(
    env: Env,
    path: str,
    skip_invalid: bool,
    keep_secrets: bool,
    batch_size: int,
    batch_wait: float,
    *,
    allow_erased: bool = False,
) -> None:
    """publish --file: a file checked whole first, or a stream as it comes; the summary."""
    from evstream.erasing import ErasedGuard
    from evstream.publishing import open_input, publish_input
    from evstream.storage import ensure_indexes

    out = env.output
    with open_input(path) as (source, size):
        store = env.store()
        ensure_indexes(store)
        done = publish_input(
            store,
            source,
            size,
            seekable=path != "-" and source.seekable(),
            skip_invalid=skip_invalid,
            keep_secrets=keep_secrets,
            batch_size=batch_size,
            batch_wait=batch_wait,
            progress=out.progress,
            warning=out.warning,
            guard=None if allow_erased else ErasedGuard(store),
        )

    def view(_: Any) -> Any:
        from evstream.output import summary_text

        report = done.report
        return summary_text(
            "Published",
            {
                ("event", "events"): report.published,
                ("duplicate", "duplicates"): report.duplicates,
                "skipped": report.skipped,
                ("line read", "lines read"): done.lines,
                "events/s": round(report.rate),
            },
        )

    out.result(done.as_dict(), view)
