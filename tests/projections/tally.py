"""A projection defined after an archive ran (tests of `evstream archive`): every event counted."""

from evstream.projections import Projection

tally = Projection(name="tally", collection="tally", version=1, types=None, initial={"n": 0})


@tally.on("login")
def _login(state, event):
    state["n"] += 1
