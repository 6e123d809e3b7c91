"""evstream seed: the sample data, or a large synthetic log."""

import sys
from typing import Annotated, Any

import typer

from evstream.cli.app import app
from evstream.cli.env import Env, running
from evstream.errors import InvalidInput


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
            out.result(
                {"dropped": [], "published": 0, "duplicates": 0},
                lambda _: "Nothing was dropped and nothing seeded.",
            )
            return
        store = env.store()
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
        sample = users is None

        def view(_: Any) -> Any:
            from evstream.output import WatchView, summary_text

            lines = []
            if sample:
                columns = WatchView()  # in columns, as watch shows them; four lines, not cut
                for doc in events_by_id(store, [e.id for e in sample_events()]):
                    lines.append(columns.render("insert", "events", {"_id": doc["_id"]}, doc))
            fields = {
                ("event published", "events published"): report.published,
                "already stored": report.duplicates,
            }
            return [*lines, summary_text("Seeded", fields)]

        out.result({"published": report.published, "duplicates": report.duplicates}, view)


def _confirm_drop(env: Env, yes: bool) -> bool:
    """Whether --drop may go ahead: --yes, or the person at the terminal said yes."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InvalidInput("--drop deletes the log, sessions and checkpoints; add --yes to confirm")
    question = f"Delete the events, sessions and checkpoints in database {env.settings.db!r}?"
    return bool(typer.confirm(question, default=False, err=True))
