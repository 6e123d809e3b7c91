"""A keyed projection over every type (tests of archive and its kill trials): one document per
event type, fed by every stream, whose `last` ids make the fold order visible."""

from evstream.projections import Projection

recent = Projection("recent_by_type", "recent_by_type", 1, None, {"last": []}, key="type")


def _note(state, event):
    state["last"] = [*state["last"], event["_id"]][-5:]


for _type in ("session.started", "login", "cart.created", "cart.item_added", "logout"):
    recent.on(_type)(_note)
