"""evstream publish: one event from options, or many from an NDJSON file or stdin."""

import contextlib
import sys
from collections.abc import Iterator
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
                return
            _publish_file(
                env,
                file,
                skip_invalid=skip_invalid,
                keep_secrets=keep_secrets,
                batch_size=batch_size,
                allow_erased=allow_erased,
            )
            return
        if skip_invalid:
            raise InvalidInput("--skip-invalid applies to --file only")
        if event_type is None or stream is None:
            raise InvalidInput("give an event TYPE and --stream, or --file PATH")
        _publish_one(
            env,
            event_type,
            stream,
            data,
            meta,
            event_id,
            expected_version,
            keep_secrets,
            allow_erased,
        )


def _publish_one(
    env: Env,
    event_type: str,
    stream: str,
    data: str | None,
    meta: str | None,
    event_id: str | None,
    expected_version: int | None,
    keep_secrets: bool,
    allow_erased: bool = False,
) -> None:
    from evstream.events import event_from_object, parse_json_object, redact_event
    from evstream.storage import append_one, ensure_indexes
    from evstream.storage.codec import loads

    fields: dict[str, Any] = {
        "type": event_type,
        "stream": stream,
        "expected_version": expected_version,
    }
    if data == "-" and meta == "-":
        raise InvalidInput("--data and --meta cannot both read stdin")
    fields["data"] = (
        parse_json_object(_option_text(data, "--data"), "--data", loads) if data is not None else {}
    )
    if meta is not None:
        fields["meta"] = parse_json_object(_option_text(meta, "--meta"), "--meta", loads)
    if event_id is not None:
        fields["id"] = event_id
    event = event_from_object(fields)
    redacted = [] if keep_secrets else redact_event(event)
    out = env.output
    if redacted:
        out.warning(f"redacted {', '.join(redacted)}; use --keep-secrets to store them as given")
    store = env.store()
    reason = store.unstorable(event)
    if reason:
        raise InvalidInput(f"{reason}; nothing was written")
    ensure_indexes(store)
    if not allow_erased:
        from evstream.erasing import ErasedGuard

        ErasedGuard(store)([event])
    result = append_one(store, event)
    if result.duplicate:
        out.notice(f"event {result.doc['_id']} was already stored; nothing was written")
    if out.json:
        out.emit(result.doc)
    else:
        from evstream.output import event_line

        out.show(event_line(result.doc))


def _option_text(value: str, option: str) -> str:
    """An option's JSON: as given, from @FILE, or from stdin for - (as curl and httpie read it)."""
    if value == "-":
        if sys.stdin.isatty():
            raise InvalidInput(f"{option} - reads stdin, which is a terminal; pipe the JSON in")
        return sys.stdin.read()
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
    from evstream.events import iter_lines
    from evstream.publishing import InvalidEvent, parse_line

    out = env.output
    bad: list[str] = []
    lines = events = 0
    with _open_input(path) as (source, size):
        store = env.store()  # what this server cannot store (NaN on nx-27017 …) is bad too
        with out.progress("checking", total=size, unit="bytes" if size else "") as advance:
            for number, raw in iter_lines(source):
                lines += 1
                advance(len(raw) if raw is not None and size else 1)
                try:
                    events += parse_line(raw, number, store.unstorable) is not None
                except InvalidEvent as exc:
                    bad.append(str(exc))
    report = {"lines": lines, "events": events, "bad": len(bad), "written": 0}
    if out.json:
        for line in bad[:CHECK_LIST_LIMIT]:
            out.emit({"bad": line})
        out.emit({**report, "listed": min(len(bad), CHECK_LIST_LIMIT)})
    else:
        for line in bad[:CHECK_LIST_LIMIT]:
            out.error(line)
        if len(bad) > CHECK_LIST_LIMIT:
            out.error(f"… and {plural_text(len(bad) - CHECK_LIST_LIMIT, 'more bad line')}")
        from evstream.output import summary_text

        out.show(
            summary_text(
                "Checked, nothing written",
                {
                    ("line", "lines"): lines,
                    ("event", "events"): events,
                    ("bad line", "bad lines"): len(bad),
                },
            )
        )
    if bad:
        raise typer.Exit(ExitCode.USAGE)


def plural_text(n: int, noun: str) -> str:
    """'1 more bad line', '3 more bad lines'."""
    return f"{n:,} {noun}{'s' * (n != 1)}"


def _publish_file(
    env: Env,
    path: str,
    *,
    skip_invalid: bool,
    keep_secrets: bool,
    batch_size: int,
    allow_erased: bool = False,
) -> None:
    from evstream.output import summary_text
    from evstream.publishing import Hooks, publish_checked, publish_stream, validate_all
    from evstream.storage import ensure_indexes

    out = env.output
    with _open_input(path) as (source, size):
        store = env.store()
        ensure_indexes(store)
        guard = None
        if not allow_erased:
            from evstream.erasing import ErasedGuard

            guard = ErasedGuard(store)
        seekable = path != "-" and source.seekable()
        parsed = None
        checked = [0]
        if seekable and not skip_invalid:
            with out.progress("checking", total=size, unit="bytes", counts="lines") as advance:

                def check_line(n: int) -> None:
                    checked[0] += 1  # once per line, blank and bad ones included
                    advance(n)

                parsed = validate_all(
                    source, check_line, store.unstorable, keep_secrets=keep_secrets
                )
            source.seek(0)
        total, unit = (size, "bytes") if seekable else (None, "")
        lines_read = [0]
        with out.progress("publishing", total=total, unit=unit) as advance:

            def count_lines(n: int) -> None:
                lines_read[0] += 1  # called once per line read, events and bad lines alike
                advance(n if seekable else 1)

            hooks = Hooks(progress=count_lines, warning=out.warning)
            if parsed is not None:  # checked: what was kept is not parsed again
                report = publish_checked(
                    store,
                    source,
                    parsed,
                    keep_secrets=keep_secrets,
                    batch_size=batch_size,
                    hooks=hooks,
                    guard=guard,
                )
                lines_read[0] = checked[0]
            else:
                report = publish_stream(
                    store,
                    source,
                    keep_secrets=keep_secrets,
                    skip_invalid=skip_invalid,
                    batch_size=batch_size,
                    hooks=hooks,
                    guard=guard,
                )
    if report.read == 0 and report.skipped == 0:
        out.warning("the input had no events")
    if out.json:
        out.emit({**report.as_dict(), "read": lines_read[0]})
    else:
        out.show(
            summary_text(
                "Published",
                {
                    ("event", "events"): report.published,
                    ("duplicate", "duplicates"): report.duplicates,
                    "skipped": report.skipped,
                    ("line read", "lines read"): lines_read[0],
                    "events/s": round(report.rate),
                },
            )
        )


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[tuple[Any, int | None]]:
    if path == "-":
        yield sys.stdin.buffer, None
        return
    target = Path(path)
    if target.is_dir():
        raise InvalidInput(f"{path} is a directory, not an NDJSON file")
    try:
        if target.suffix == ".gz":  # an archive (evstream archive --to PATH.gz)
            import gzip

            handle = gzip.open(target, "rb")  # noqa: SIM115
        else:
            handle = open(target, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        size = target.stat().st_size if target.is_file() and target.suffix != ".gz" else None
        yield handle, size
