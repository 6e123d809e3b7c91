"""An upcaster that breaks the rules: it moves an event's ts (tests load it with --module)."""

from datetime import timedelta

from evstream.projections import Projection, upcaster


@upcaster("old.tick")
def _moves_ts(event):
    return {**event, "type": "tick", "ts": event["ts"] + timedelta(hours=1)}


ticks = Projection(name="ticks", collection="ticks", version=1, types=["tick"], initial={"n": 0})


@ticks.on("tick")
def _tick(state, event):
    state["n"] += 1
