"""evstream config: the resolved settings and where each came from (docs/configuration.md)."""

import typer

from evstream.cli.app import app
from evstream.cli.env import running


@app.command("config")
def config_command(ctx: typer.Context) -> None:
    """Show the resolved settings and where each came from: an option, an environment
    variable, the project file (evstream.toml), a context of ~/.config/evstream/config.toml,
    or the default. Passwords are masked.

    Examples:

    \b
      evstream config
      evstream --context prod config -o json
    """
    with running(ctx) as env:
        from evstream.config import config_report
        from evstream.writer import renderer

        env.output.result(config_report(env.settings), renderer("config_view"))
