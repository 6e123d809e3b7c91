"""The root command: global options anywhere, help as a reader needs it, usage errors as one
stderr line. Each command lives in a module of its own beside this one (evstream/cli/)."""

import os
import re
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from evstream import __version__
from evstream.cli.env import Env
from evstream.cli.options import OutputMode
from evstream.cli.values import plain_values
from evstream.errors import ExitCode
from evstream.interrupts import CTRL_C

GLOBAL_VALUE_OPTIONS = frozenset({"--uri", "--db", "--output", "-o", "--context"})
GLOBAL_FLAGS = frozenset({"--debug", "--verbose", "--quiet", "-q"})


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
        plain_values(self)  # no pydantic for well-formed values (see evstream.cli.values)
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
            sys.exit(CTRL_C.exit_code)
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `evstream`: the help, as is
                sys.stderr.write(exc.format_message() + "\n")
                sys.exit(exc.exit_code)
            command = getattr(getattr(exc, "ctx", None), "command_path", None) or "evstream"
            named = usage_command(self, argv)  # the ctx may be a group's, not its command's
            if named and len(named) > len(command):
                command = named
            # Typer's wording adds "Value error, " and names the env var even for a value given
            # on the command line.
            message = exc.format_message().replace("Value error, ", "")
            message = re.sub(r" \(env var: '[A-Z_]+'\)", "", message)
            sys.stderr.write(f"error: {message} (see '{command} --help')\n")
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def usage_command(group: Any, argv: list[str]) -> str | None:
    """'evstream NAME [SUBNAME]' for the (sub)command named in `argv`: its help is the one a
    usage error should point to. None when no command is named."""
    path: list[str] = []
    for token in argv:
        if token == "--":
            break
        commands = getattr(group, "commands", None)
        if commands is None:
            break
        if not token.startswith("-") and token in commands:
            path.append(token)
            group = commands[token]
    return " ".join(["evstream", *path]) if path else None


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
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            envvar="EVSTREAM_CONTEXT",
            metavar="NAME",
            help="Use this context of ~/.config/evstream/config.toml "
            "[default: the project file's, if it names one].",
            show_default=False,
        ),
    ] = None,
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
    from evstream.config import ConfigError, resolve_settings

    def given(name: str, value: Any) -> Any:
        """A value typed on the command line; one from a variable is resolve_settings' to
        read, so that `evstream config` can tell the two apart."""
        source = getattr(ctx.get_parameter_source(name), "name", None)
        return value if source == "COMMANDLINE" else None

    options = {
        "uri": given("uri", uri) or None,
        "db": given("db", db),
        "output": given("output", output),
        "context": given("context", context) or None,
        "debug": debug,
        "verbose": verbose,
        "quiet": quiet,
    }
    warnings: list[str] = []
    try:
        settings = resolve_settings(options, warn=warnings.append)
    except ConfigError as exc:
        from evstream.writer import Output

        Output("auto", quiet=quiet).error(exc.line())
        raise typer.Exit(exc.exit_code) from None
    ctx.obj = Env(settings)
    for warning in warnings:  # a configuration file that others may change
        ctx.obj.output.warning(warning)
