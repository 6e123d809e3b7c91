"""evstream server: start, restart, stop, status and logs of the embedded dev store."""

from typing import Annotated, Any

import typer

from evstream.cli.app import HelpGroup, app
from evstream.cli.env import Env, running
from evstream.cli.options import TcpOption
from evstream.errors import ExitCode

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


def _show_server(env: Env, info: dict[str, Any]) -> None:
    from evstream.writer import renderer

    env.output.result(info, renderer("server_view"))


def _say(env: Env, notices: list[str], warnings: list[str]) -> None:
    for line in notices:
        env.output.notice(line)
    for line in warnings:  # TCP opened: said even with --quiet
        env.output.warning(line)


@server_app.command("start")
def server_start(ctx: typer.Context, tcp: TcpOption = None) -> None:
    """Start the embedded dev store, or say where it already runs.

    It listens on a Unix socket in its data directory, which only you can open; --tcp adds a
    loopback port (the same one on every start) for clients that need one, restarting a store
    that runs without it at the same socket. Any local user can reach that port.

    Examples:

    \b
      evstream server start
      evstream server start --tcp
    """
    with running(ctx) as env:
        from evstream.devserver import start

        info, notices, warnings = start(env.settings.data_home, tcp, env.settings.db)
        _say(env, notices, warnings)
        _show_server(env, info)


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
        from evstream.devserver import server_info
        from evstream.embedded import DevStore

        dev = DevStore(env.settings.data_home)
        old, record = dev.restart(tcp=tcp)
        stopped = [f"stopped the embedded dev store (pid {old.pid})"] if old is not None else []
        _say(env, [*dev.notes.lines, *stopped], dev.notes.warnings)
        _show_server(env, server_info(record, True, env.settings.db))


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
        env.output.result(
            {"stopped": record is not None, "pid": record.pid if record else None},
            lambda _: (
                f"stopped the embedded dev store (pid {record.pid}); "
                f"its data stays in {record.data_dir}"
                if record
                else "the embedded dev store was not running; nothing to stop"
            ),
        )


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

        info = details(env.settings.data_home, env.settings.db)
        _show_server(env, info)
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
        from evstream.writer import Plain

        out = env.output
        log_file = DevStore(env.settings.data_home).log_file

        def show(line: str) -> None:
            out.result({"line": line}, lambda row: Plain(row["line"]))

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
