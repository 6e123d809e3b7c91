"""A user's projection, defined with the public API only (tests load it with --module)."""

from evstream.projections import Projection

carts = Projection(
    name="carts",
    collection="carts",
    version=1,
    types=["cart.created", "cart.item_added", "cart.checked_out"],
    initial={"owner": None, "items": [], "total": 0, "status": None},
)


@carts.on("cart.created")
def _created(state, event):
    state["owner"] = (event.get("data") or {}).get("owner")
    state["status"] = "open"


@carts.on("cart.item_added")
def _item_added(state, event):
    data = event["data"]
    if data.get("sku") == "boom":
        raise ValueError("a sku the handler refuses")
    state["items"].append(data["sku"])
    state["total"] += data["price"]


@carts.on("cart.checked_out")
def _checked_out(state, event):
    state["status"] = "checked_out"
