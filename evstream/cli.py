"""The evstream command line: global options, one thin function per command, errors to exit codes.

Heavy imports (pymongo, bson, rich rendering) happen inside commands, so `--help` and shell
completion stay fast and never touch the network.
"""

import atexit
import contextlib
import enum
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from evstream import __version__
from evstream.cli_values import plain_values
from evstream.errors import EvstreamError, ExitCode, Interrupted, InvalidInput
from evstream.interrupts import CTRL_C
from evstream.settings import Settings, resolve_db, scrub

if TYPE_CHECKING:
    from evstream.storage import Store
    from evstream.writer import Output


GLOBAL_VALUE_OPTIONS = frozenset({"--uri", "--db", "--output", "-o"})
GLOBAL_FLAGS = frozenset({"--debug", "--verbose", "--quiet", "-q"})


class OutputMode(str, enum.Enum):
    """--output's choices."""

    auto = "auto"
    pretty = "pretty"
    json = "json"


def hoist_global_options(group: Any, args: list[str]) -> list[str]:
    """Move global options given after the command (`evstream watch -o json`) before it."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name = args[i].split("=", 1)[0]
        i += 2 if args[i] in GLOBAL_VALUE_OPTIONS else 1
        if name not in GLOBAL_VALUE_OPTIONS and name not in GLOBAL_FLAGS:
            return args  # --help, --version …: nothing to move
    command_at = i
    command = group
    while i < len(args) and hasattr(command, "commands") and args[i] in command.commands:
        command = command.commands[args[i]]
        i += 1
    if command is group:
        return args
    takes_value = {
        opt
        for param in getattr(command, "params", [])
        if getattr(param, "param_type_name", "") == "option"
        and not getattr(param, "is_flag", False)
        for opt in param.opts
    }
    hoisted: list[str] = []
    kept = args[command_at:i]
    rest = args[i:]
    j = 0
    while j < len(rest):
        token = rest[j]
        if token == "--":
            kept.extend(rest[j:])
            break
        if token in GLOBAL_VALUE_OPTIONS and j + 1 < len(rest):
            hoisted += rest[j : j + 2]
            j += 2
        elif token in GLOBAL_VALUE_OPTIONS:
            return args  # its value is missing: hoisted, it would take the command as its value
        elif token.split("=", 1)[0] in GLOBAL_VALUE_OPTIONS or token in GLOBAL_FLAGS:
            hoisted.append(token)
            j += 1
        elif token in takes_value:
            kept += rest[j : j + 2]
            j += 2
        else:
            kept.append(token)
            j += 1
    return args[:command_at] + hoisted + kept


class Op(str, enum.Enum):
    """watch --op's choices."""

    insert = "insert"
    update = "update"
    replace = "replace"
    delete = "delete"


def _metavar(param: Any) -> str | None:
    """A readable placeholder for an option's value (N, SECONDS, a|b|c, FROM …), not <str>."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return None
    if desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    kind = desc.annotation
    if desc.is_list and getattr(kind, "__args__", None):
        kind = kind.__args__[0]
    if kind is int:
        return "N"
    if kind is float:
        return "SECONDS"
    if kind is str:
        longest = max(param.opts, key=len).lstrip("-") if param.opts else param.name
        return str(longest).upper().replace("-", "_")
    return None


class HelpGroup(TyperGroup):
    """Help as a reader needs it: whole first sentences as command summaries, named values."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:  # noqa: D102
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=400)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def format_help(self, ctx: Any, formatter: Any) -> None:  # noqa: D102
        name_values(self)
        super().format_help(ctx, formatter)


def name_values(command: Any) -> None:
    """Give every option that takes a plain value a named placeholder, in every subcommand."""
    for param in getattr(command, "params", []):
        explicit = param.metavar and not str(param.metavar).startswith("<")
        kind = getattr(param, "param_type_name", "")
        if kind == "option" and not param.is_flag and not explicit:
            param.metavar = _metavar(param) or param.metavar
        elif kind == "argument":
            # An argument is shown by its name (TYPE, collection); its type adds only <str>.
            param.display_type_rich = lambda ctx: None
    for sub in getattr(command, "commands", {}).values():
        name_values(sub)


NOT_AFTER_A_COMMAND = frozenset({"--version", "--install-completion", "--show-completion"})


def complete_globals_after_commands(group: Any) -> None:
    """For shell completion only: every subcommand also takes the global options, so that
    `evstream watch --ou<TAB>` and `evstream watch -o <TAB>` complete as they run (the CLI
    moves global options given after a command before it; see hoist_global_options)."""
    shared = [
        param
        for param in group.params
        if param.param_type_name == "option"
        and not set(param.opts) & NOT_AFTER_A_COMMAND
        and "--help" not in param.opts
    ]

    def add(command: Any) -> None:
        for sub in getattr(command, "commands", {}).values():
            names = {opt for param in sub.params for opt in param.opts}
            sub.params.extend(p for p in shared if not set(p.opts) & names)
            add(sub)

    add(group)


class EvstreamGroup(HelpGroup):
    """The root command: global options anywhere; usage errors are one stderr line and exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        name_values(self)
        plain_values(self)  # no pydantic for well-formed values (see evstream.cli_values)
        if "_EVSTREAM_COMPLETE" in os.environ:
            complete_globals_after_commands(self)
        given = kwargs.pop("args", None)
        if given is None and args:
            given, args = args[0], args[1:]
        argv = list(sys.argv[1:] if given is None else given)
        kwargs["args"] = hoist_global_options(self, argv)
        kwargs["standalone_mode"] = False
        try:
            with CTRL_C:  # Ctrl-C is never lost in a finalizer (see evstream.interrupts)
                code = super().main(*args, **kwargs)
        except typer.Abort:
            sys.stderr.write("\n")
            sys.exit(ExitCode.INTERRUPTED)
        except KeyboardInterrupt:
            sys.exit(ExitCode.INTERRUPTED)
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `evstream`: the help, as is
                sys.stderr.write(exc.format_message() + "\n")
                sys.exit(exc.exit_code)
            command = getattr(getattr(exc, "ctx", None), "command_path", None) or "evstream"
            # Typer's wording adds "Value error, " and names the env var even for a value given
            # on the command line.
            message = exc.format_message().replace("Value error, ", "")
            message = re.sub(r" \(env var: '[A-Z_]+'\)", "", message)
            sys.stderr.write(f"error: {message} (see '{command} --help')\n")
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=EvstreamGroup,
    name="evstream",
    help="Event streams in MongoDB: publish, watch, replay, and rebuild read models.",
    epilog=(
        "Examples:\n\n\b\n"
        "  evstream seed && evstream rebuild-sessions\n"
        "  evstream watch --from start\n"
        "  evstream --uri mongodb://db1/?replicaSet=rs0 publish login -s alice\n\n"
        "With no --uri, evstream uses its embedded dev store (for trying it out and tests)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Env:
    """What every command gets: resolved settings, the output, and a lazily opened store."""

    settings: Settings
    # Said (and exit 1) if the reader of stdout goes away: set by a command for which that
    # loses something, as watch --checkpoint does (docs/delivery.md).
    broken_pipe: str | None = None
    _output: "Output | None" = None
    _store: "Store | None" = field(default=None, repr=False)

    @property
    def output(self) -> "Output":
        """The output of this invocation."""
        if self._output is None:
            from evstream.writer import Output  # not evstream.output: no rich for JSON lines

            self._output = Output(self.settings.output, quiet=self.settings.quiet)
        return self._output

    def store(self) -> "Store":
        """Connect (starting the embedded dev store if no URI is configured)."""
        if self._store is None:
            from evstream.storage import connect

            self._store = connect(self.settings, self.output.notice)
        return self._store

    def close(self, *, interrupted: bool = False) -> None:
        """Release the connection; after Ctrl-C, leave it to the process's exit.

        Closing a client ends its server sessions first, which waits for a server for up to
        the server-selection timeout (30 s) when none answers: Ctrl-C while a watch rides out
        an outage would take that long. The operating system closes the sockets at exit.
        """
        if self._store is not None:
            if interrupted:
                self._store.abandon()
            else:
                self._store.close()


@contextlib.contextmanager
def running(ctx: typer.Context) -> Iterator[Env]:
    """Run a command body: evstream errors → one stderr line and their exit code."""
    env: Env = ctx.obj
    interrupted = False
    try:
        from evstream.storage import translate_errors

        with translate_errors(env.settings.uri):
            yield env
    except Interrupted as exc:
        interrupted = True
        env.output.notice(exc.line())
        raise typer.Exit(exc.exit_code) from None
    except EvstreamError as exc:
        if env.settings.debug:
            raise
        env.output.error(scrub(exc.line(), env.settings.uri))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        interrupted = True
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other Unix tools do, unless the
        # command said that this loses something.
        with contextlib.suppress(OSError):
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115
        if env.broken_pipe:
            env.output.error(env.broken_pipe)
            raise typer.Exit(ExitCode.UNEXPECTED) from None
        raise typer.Exit(ExitCode.OK) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if env.settings.debug:
            raise
        message = scrub(f"{type(exc).__name__}: {exc}", env.settings.uri)
        env.output.error(f"unexpected {message} (run with --debug for the traceback)")
        raise typer.Exit(ExitCode.UNEXPECTED) from None
    finally:
        env.close(interrupted=interrupted)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"evstream {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    uri: Annotated[
        str | None,
        typer.Option(
            "--uri",
            envvar=["EVSTREAM_URI", "MONGODB_URI"],
            metavar="URI",
            help="MongoDB connection string (the first of these variables that is set). "
            "Without one, the embedded dev store is used.",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="EVSTREAM_DB",
            metavar="NAME",
            help="Database name [default: the URI's database, else evstream].",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        OutputMode,
        typer.Option(
            "--output",
            "-o",
            envvar="EVSTREAM_OUTPUT",
            help="auto: pretty on a terminal, JSON lines when piped.",
            case_sensitive=False,
        ),
    ] = OutputMode.auto,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Say which store is used on every command."),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No notices on stderr; warnings and errors still."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Event streams in MongoDB: publish, watch, replay, and rebuild read models."""
    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet contradict each other")
    ctx.obj = Env(
        Settings(
            uri=uri or None,
            db=resolve_db(db, uri or None),
            output=OutputMode(output).value,
            debug=debug,
            verbose=verbose,
            quiet=quiet,
        )
    )


# --- publish -------------------------------------------------------------------------------------


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
            )
            return
        if skip_invalid:
            raise InvalidInput("--skip-invalid applies to --file only")
        if event_type is None or stream is None:
            raise InvalidInput("give an event TYPE and --stream, or --file PATH")
        _publish_one(env, event_type, stream, data, meta, event_id, expected_version, keep_secrets)


def _publish_one(
    env: Env,
    event_type: str,
    stream: str,
    data: str | None,
    meta: str | None,
    event_id: str | None,
    expected_version: int | None,
    keep_secrets: bool,
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
    env: Env, path: str, *, skip_invalid: bool, keep_secrets: bool, batch_size: int
) -> None:
    from evstream.output import summary_text
    from evstream.publishing import Hooks, publish_checked, publish_stream, validate_all
    from evstream.storage import ensure_indexes

    out = env.output
    with _open_input(path) as (source, size):
        store = env.store()
        ensure_indexes(store)
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
        handle = open(target, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        size = target.stat().st_size if target.is_file() else None
        yield handle, size


# --- seed ----------------------------------------------------------------------------------------


@app.command()
def seed(
    ctx: typer.Context,
    users: Annotated[
        int | None, typer.Option("--users", min=1, help="Generate synthetic data for N users.")
    ] = None,
    events_per_user: Annotated[
        int, typer.Option("--events-per-user", min=1, help="With --users: events per user.")
    ] = 10,
    random_seed: Annotated[
        int, typer.Option("--random-seed", help="With --users: seed for reproducible data.")
    ] = 1,
    span: Annotated[
        str,
        typer.Option(
            "--span",
            metavar="SPAN",
            help="With --users: spread the events' times over this past window, busier by day "
            "(1d, 12h, 90m, 30s; 0: all now).",
        ),
    ] = "1d",
    drop: Annotated[
        bool, typer.Option("--drop", help="Delete the log, sessions and checkpoints first.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --drop.")] = False,
) -> None:
    """Store sample data: Alice and Bob, or a large synthetic log with --users.

    Seeded events have fixed ids, so running the same seed again stores nothing new.

    Examples:

    \b
      evstream seed
      evstream seed --users 3000 --events-per-user 10 --random-seed 7 --span 7d
    """
    from evstream.seeding import parse_span, sample_events, synthetic_events

    try:
        window = parse_span(span)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--span'") from None
    with running(ctx) as env:
        out = env.output
        if drop and not _confirm_drop(env, yes):
            if out.json:
                out.emit({"dropped": [], "published": 0, "duplicates": 0})
            else:
                out.show("Nothing was dropped and nothing seeded.")
            return
        store = env.store()
        from evstream.output import summary_text
        from evstream.publishing import Hooks, publish_events
        from evstream.storage import drop_owned, ensure_indexes, events_by_id

        if drop:
            dropped = drop_owned(store)
            out.notice(f"dropped {', '.join(dropped) or 'nothing (the database was empty)'}")
        ensure_indexes(store)
        if users is None:
            events = sample_events()
            total: int | None = len(events)
        else:
            events = synthetic_events(users, events_per_user, random_seed, span=window)  # type: ignore[assignment]
            total = users * events_per_user
        with out.progress("seeding", total=total, counts="events") as advance:
            report = publish_events(
                store, events, hooks=Hooks(progress=advance, warning=out.warning)
            )
        if users is None and not out.json:
            from evstream.output import WatchView

            view = WatchView()  # in columns, as watch shows them; four lines, not cut
            for doc in events_by_id(store, [e.id for e in sample_events()]):
                out.show(view.render("insert", "events", {"_id": doc["_id"]}, doc))
        fields = {
            ("event published", "events published"): report.published,
            "already stored": report.duplicates,
        }
        if out.json:
            out.emit({"published": report.published, "duplicates": report.duplicates})
        else:
            out.show(summary_text("Seeded", fields))


def _confirm_drop(env: Env, yes: bool) -> bool:
    """Whether --drop may go ahead: --yes, or the person at the terminal said yes."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InvalidInput("--drop deletes the log, sessions and checkpoints; add --yes to confirm")
    question = f"Delete the events, sessions and checkpoints in database {env.settings.db!r}?"
    return bool(typer.confirm(question, default=False, err=True))


# --- server --------------------------------------------------------------------------------------

server_app = typer.Typer(cls=HelpGroup, no_args_is_help=True)
app.add_typer(server_app, name="server")


@server_app.callback()
def server_options() -> None:
    """Manage the embedded dev store, the local server used when no --uri is configured.

    It starts by itself when a command needs it and keeps running for the next ones.

    Its data lives under EVSTREAM_HOME (default ~/.local/share/evstream), readable by you
    alone; it listens on a Unix socket there, and on loopback TCP with start --tcp.

    Examples:

    \b
      evstream server status
      evstream server restart --tcp
      evstream server logs --follow
    """


TcpOption = Annotated[
    bool | None,
    typer.Option(
        "--tcp/--no-tcp",
        help="Also listen on loopback TCP, for clients that need a port (kept across "
        "restarts) [default: as it was last started].",
        show_default=False,
    ),
]


def _server_info(record: Any, started: bool) -> dict[str, Any]:
    return {
        "running": True,
        "started": started,
        "uri": record.uri,
        "tcp_uri": record.tcp_uri,
        "socket": record.socket,
        "pid": record.pid,
        "port": record.port,
        "data_dir": record.data_dir,
        "log_file": record.log_file,
    }


def _show_server(env: Env, info: dict[str, Any]) -> None:
    if env.output.json:
        env.output.emit(info)
    else:
        from evstream.output import server_view

        env.output.show(server_view(info))


@server_app.command("start")
def server_start(ctx: typer.Context, tcp: TcpOption = None) -> None:
    """Start the embedded dev store, or say where it already runs.

    It listens on a Unix socket in its data directory, which only you can open; --tcp adds a
    loopback port (the same one on every start) for clients that need one.

    Examples:

    \b
      evstream server start
      evstream server start --tcp
    """
    with running(ctx) as env:
        from evstream.embedded import DevStore

        dev = DevStore(env.settings.data_home)
        saved = dev.read_record()
        current = dev.running()
        if current is not None and tcp is not None and bool(current.port) != tcp:
            which = "with" if current.port else "without"
            raise InvalidInput(
                f"the embedded dev store already runs {which} TCP",
                hint=f"evstream server restart --{'' if tcp else 'no-'}tcp",
            )
        record, started = dev.start(tcp=tcp)
        for line in dev.notes.lines:
            env.output.notice(line)
        if saved is not None and started:
            env.output.notice(f"replaced a stale record of pid {saved.pid}, which had stopped")
        _show_server(env, _server_info(record, started))


@server_app.command("restart")
def server_restart(ctx: typer.Context, tcp: TcpOption = None) -> None:
    """Stop the embedded dev store and start it again at the same address.

    Running watchers reconnect by themselves: the socket and the port stay the same.

    Examples:

    \b
      evstream server restart
      evstream server restart --tcp
    """
    with running(ctx) as env:
        from evstream.embedded import DevStore

        dev = DevStore(env.settings.data_home)
        old, record = dev.restart(tcp=tcp)
        for line in dev.notes.lines:
            env.output.notice(line)
        if old is not None:
            env.output.notice(f"stopped the embedded dev store (pid {old.pid})")
        _show_server(env, _server_info(record, True))


@server_app.command("stop")
def server_stop(ctx: typer.Context) -> None:
    """Stop the embedded dev store; its data and its address stay for the next start.

    Example:

    \b
      evstream server stop
    """
    with running(ctx) as env:
        from evstream.embedded import DevStore

        dev = DevStore(env.settings.data_home)
        record = dev.stop()
        if env.output.json:
            env.output.emit({"stopped": record is not None, "pid": record.pid if record else None})
        elif record:
            env.output.show(
                f"stopped the embedded dev store (pid {record.pid}); "
                f"its data stays in {record.data_dir}"
            )
        else:
            env.output.show("the embedded dev store was not running; nothing to stop")


@server_app.command("status")
def server_status(ctx: typer.Context) -> None:
    """Say whether the embedded dev store runs, where its data lives and how big it is.

    Exits 0 when it runs and 3 when it does not, so scripts can test it.

    Examples:

    \b
      evstream server status
      evstream server status --output json | jq .data_bytes
    """
    with running(ctx) as env:
        from evstream.devserver import details

        info = details(env.settings.data_home)
        if env.output.json:
            env.output.emit(info)
        else:
            from evstream.output import server_view

            env.output.show(server_view(info))
        if not info["running"]:
            raise typer.Exit(ExitCode.UNREACHABLE)


@server_app.command("logs")
def server_logs(
    ctx: typer.Context,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="How many of the last lines to show.")
    ] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep showing lines as they are written.")
    ] = False,
) -> None:
    """Show the embedded dev store's log: its last lines, or follow it as it grows.

    Examples:

    \b
      evstream server logs
      evstream server logs -n 100
      evstream server logs --follow
    """
    with running(ctx) as env:
        from evstream.devserver import follow_lines, tail_lines
        from evstream.embedded import DevStore

        out = env.output
        log_file = DevStore(env.settings.data_home).log_file

        def show(line: str) -> None:
            if out.json:
                out.emit({"line": line})
            else:
                out.stdout.write(line + "\n")
                out.stdout.flush()

        last, offset = tail_lines(log_file, lines)
        if not log_file.exists():
            out.notice(f"no log yet at {log_file}; the dev store writes it when it starts")
        elif not last and lines:
            out.notice(f"the log at {log_file} is empty")
        for line in last:
            show(line)
        if follow:
            out.notice(f"following {log_file} (Ctrl-C to stop)")
            for line in follow_lines(log_file, offset=offset):
                show(line)


# --- watch ---------------------------------------------------------------------------------------


def _complete_projections(ctx: typer.Context, incomplete: str) -> list[str]:
    """Projection names for shell completion: the built-ins, EVSTREAM_PROJECTIONS' and
    --module's (their modules are imported; a module that fails to import offers nothing)."""
    try:
        from evstream.projections import known_projections, modules_to_load

        names = known_projections(modules_to_load(ctx.params.get("module")))
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return []
    return sorted(name for name in names if name.startswith(incomplete))


def _complete_checkpoints(ctx: typer.Context, incomplete: str) -> list[str]:
    """Saved checkpoint names for shell completion, from the configured server, or from the
    embedded dev store if it runs (never started for this); nothing within half a second."""
    import os

    from evstream.settings import default_home, resolve_db

    root = ctx.find_root()
    uri = root.params.get("uri") or os.environ.get("EVSTREAM_URI") or os.environ.get("MONGODB_URI")
    try:
        if not uri:
            from evstream.embedded import current_uri

            uri = current_uri(default_home())
        if not uri:
            return []
        from evstream.storage.delivery import checkpoint_names_at

        db = resolve_db(root.params.get("db") or os.environ.get("EVSTREAM_DB"), uri)
        names = checkpoint_names_at(uri, db, timeout_ms=500)
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return []
    return sorted(name for name in names if name.startswith(incomplete))


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
            autocompletion=_complete_checkpoints,
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
        try:
            follow(store, options, _watch_hooks(env, printer, show_secrets, executor, part))
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

    if part is None:
        deliver = show
    else:

        def deliver(c: Any) -> bool | None:
            stream = (c.doc or {}).get("stream")
            owner = stream if isinstance(stream, str) else str(c.key.get("_id"))
            if partition_of(owner, part[1]) != part[0]:
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


# --- rebuild, rebuild-sessions ------------------------------------------------------------------

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
        help="Rebuild only the streams in part I of N (by a stable hash of the stream), so N "
        "workers share one rebuild; each part keeps its own checkpoint.",
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


@app.command("rebuild")
def rebuild_projection(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The projection, e.g. sessions or carts.",
            autocompletion=_complete_projections,
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

        projection = load_projection(name, module)
        _run_projection(
            env,
            projection,
            incremental,
            dry_run,
            margin,
            partition,
            follow,
            idle_timeout,
            batch_size,
        )


@app.command("rebuild-sessions")
def rebuild_sessions(
    ctx: typer.Context,
    incremental: IncrementalOption = False,
    dry_run: DryRunOption = False,
    margin: MarginOption = 10.0,
    partition: PartitionOption = None,
    follow: FollowOption = False,
    idle_timeout: IdleTimeoutOption = None,
    batch_size: BatchSizeOption = None,
) -> None:
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

        _run_projection(
            env,
            projection,
            incremental,
            dry_run,
            margin,
            partition,
            follow,
            idle_timeout,
            batch_size,
        )


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
    from evstream.output import follow_summary_text
    from evstream.projection import Follower
    from evstream.storage import ensure_indexes

    if dry_run:
        raise InvalidInput("--follow writes as events arrive; --dry-run is for a single run")
    part = parse_partition(partition)
    out = env.output
    store = env.store()
    ensure_indexes(store)
    follower = Follower(
        store, projection, part=part, margin=margin, notice=out.notice, warning=out.warning
    )
    report = follower.run(idle_timeout=idle_timeout)
    if out.json:
        out.emit(report.as_dict())
    else:
        out.show(follow_summary_text(report.as_dict()))


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
    from evstream.output import rebuild_summary_text
    from evstream.projection import plan_rebuild, rebuild
    from evstream.storage import ensure_indexes

    part = parse_partition(partition)
    out = env.output
    store = env.store()
    if not dry_run:
        ensure_indexes(store)  # the (stream, version) order and the ts window use them
    with out.status("planning the rebuild: the log's size and the last run"):
        plan = plan_rebuild(
            store,
            projection,
            incremental=incremental,
            margin=margin,
            part=part,
            with_total=out.interactive,  # only a progress bar needs it
        )
    if plan.reason:
        out.notice(f"rebuilding in full: {plan.reason}")
    label = "applying new events" if plan.mode == "incremental" else f"rebuilding {projection.name}"
    with out.progress(label, total=plan.total or None, counts="events") as advance:
        report = rebuild(store, plan, dry_run=dry_run, batch_size=batch_size, progress=advance)
    skipped = report.skipped.line("documents")
    if skipped:
        out.warning(skipped)
    if out.json:
        out.emit(report.as_dict())
    else:
        out.show(rebuild_summary_text(report.as_dict()))


# --- status --------------------------------------------------------------------------------------


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


# --- check ---------------------------------------------------------------------------------------


@app.command()
def check(ctx: typer.Context) -> None:
    """Check the log's health: documents that are not events, version gaps and duplicates, ts
    going backwards, indexes, evstream's own collections. Reads only; writes nothing.

    Exits 0 when healthy and 7 when it found problems, each with its fix.

    Examples:

    \b
      evstream check
      evstream check -o json | jq '.findings[].fix'
    """
    with running(ctx) as env:
        from evstream.check import Check

        out = env.output
        checking = Check(env.store())
        with out.progress("checking the log", total=checking.total or None) as advance:
            report = checking.run(advance)
        if out.json:
            out.emit(report.as_dict())
        else:
            from evstream.output import check_view

            out.show(check_view(report.as_dict()))
        if not report.healthy:
            raise typer.Exit(ExitCode.PROBLEMS_FOUND)


# --- bench ---------------------------------------------------------------------------------------


class Workload(str, enum.Enum):
    """bench's workloads: evstream.bench.RUNNERS, and all of them (kept here so that --help
    and completion need not import the benchmarks, which load pymongo)."""

    publish = "publish"
    rebuild = "rebuild"
    watch = "watch"
    exec = "exec"
    all = "all"


@app.command()
def bench(
    ctx: typer.Context,
    workload: Annotated[
        Workload, typer.Argument(help="What to measure.", show_default=True, case_sensitive=False)
    ] = Workload.all,
    events: Annotated[int, typer.Option("--events", min=100, help="Events per workload.")] = 30_000,
    streams: Annotated[
        int, typer.Option("--streams", min=1, help="Streams they spread over.")
    ] = 3_000,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch databases.")] = False,
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            "-r",
            min=1,
            help="Repeat, alternating which side goes first; report medians.",
        ),
    ] = 1,
    processes: Annotated[
        bool,
        typer.Option(
            "--processes",
            help="Time both sides as whole processes, from start to exit, as a user sees them.",
        ),
    ] = False,
) -> None:
    """Measure evstream against raw pymongo doing the same work on this server.

    Each workload runs in scratch databases (evstream_bench_*), dropped afterwards unless
    --keep. The ratio to raw pymongo is what carries over between deployments, and client CPU
    per event most of all: on a server faster than this one, the client is the limit.

    Examples:

    \b
      evstream bench publish --events 30000 --streams 3000
      evstream --uri "$MONGODB_URI" bench all -o json
    """
    with running(ctx) as env:
        from evstream.bench import RUNNERS, run

        names = list(RUNNERS) if workload is Workload.all else [workload.value]
        out = env.output
        with out.status("benchmarking") as say:
            # A spinner on a terminal; elsewhere (a CI log) each step on a line of its own.
            progress = say if out.interactive else out.notice
            results = run(
                env.settings, names, events, streams, keep, progress, rounds, out.notice, processes
            )
        if out.json:
            for result in results:
                out.emit(result.as_dict())
            return
        from evstream.output import bench_table

        out.show(bench_table(results))


def main() -> None:
    """Entry point of the `evstream` command."""
    try:
        app(prog_name="evstream")
    except SystemExit as exc:
        exit_now(exc.code)
        raise


def exit_now(code: object) -> None:
    """End the process once its work is done, without tearing the interpreter down.

    Python's own exit frees every module and object one by one: 35-40 ms once pymongo, typer
    and rich are loaded, a fifth of a one-event publish (mypy's `hard_exit` skips it the same
    way). The atexit handlers still run and stdout and stderr are flushed first; returns (for
    the ordinary exit) when a thread that Python would wait for is still running, under a
    profiler or tracer, or when the output cannot be flushed (a closed pipe: the ordinary exit
    reports it as it always has).
    """
    if not (code is None or isinstance(code, int)):
        return
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return  # python -m cProfile, a debugger, coverage: they finish their work after main()
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError):  # what an atexit handler printed
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code or 0)
