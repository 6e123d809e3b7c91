"""evstream bench: evstream against raw pymongo doing the same work."""

import enum
from typing import Annotated, Any

import typer

from evstream.cli.app import app
from evstream.cli.env import running


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

        def view(_: Any) -> Any:
            from evstream.output import bench_table

            return bench_table(results)

        out.result([result.as_dict() for result in results], view)
