"""evstream init: propose a field map for a log that another application shaped."""

from typing import Annotated, Any

import typer

from evstream.cli.app import app
from evstream.cli.env import running
from evstream.errors import InvalidInput


@app.command()
def init(
    ctx: typer.Context,
    collection: Annotated[
        str | None,
        typer.Argument(
            help="The collection the application writes (default: the [log] map's, else events).",
            show_default=False,
        ),
    ] = None,
    sample: Annotated[
        int, typer.Option("--sample", min=1, help="How many documents to sample.")
    ] = 1000,
    write: Annotated[
        bool,
        typer.Option("--write", help="Create evstream.toml with the map (never overwrites one)."),
    ] = False,
) -> None:
    """Propose a field map ([log]) for an event collection another application writes, from a
    sample of its documents: prints the TOML and how many sampled documents it fits.

    Examples:

    \b
      evstream init domain_events
      evstream init domain_events --write
    """
    with running(ctx) as env:
        from evstream.adopting import propose_map, write_config

        out = env.output
        proposal = propose_map(env.store(verify=False), collection, sample)
        data = proposal.as_dict()
        refused = None
        if write:
            try:
                data["written"] = str(write_config(proposal))
            except InvalidInput as exc:  # the proposal is still shown, then the refusal
                refused = exc
        out.result(data, lambda shown: _view(shown, write))
        if refused is not None:
            raise refused


def _view(data: dict[str, Any], write: bool) -> Any:
    from rich.text import Text

    text = Text(data["toml"].rstrip())
    fits, sampled = data["fits"], data["sampled"]
    text.append(
        f"\n# the map fits {fits:,} of the {sampled:,} sampled documents",
        style="green" if fits == sampled else "yellow",
    )
    if data["unfound"]:
        text.append(f"\n# not found: {', '.join(data['unfound'])} (set by hand)", style="yellow")
    if data.get("written"):
        text.append(f"\n# written to {data['written']}", style="dim")
    elif not write:
        text.append("\n# evstream init --write creates evstream.toml with it", style="dim")
    return text
