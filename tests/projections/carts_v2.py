"""carts, version 2: the fold changed (totals in cents, a new field) and says so."""

from evstream.projections import Projection

carts = Projection(
    name="carts",
    collection="carts",
    version=2,
    types=["cart.created", "cart.item_added", "cart.checked_out"],
    initial={"owner": None, "items": [], "total": 0, "status": None, "cents": 0},
)


@carts.on("cart.created")
def _created(state, event):
    state["owner"] = (event.get("data") or {}).get("owner")
    state["status"] = "open"


@carts.on("cart.item_added")
def _item_added(state, event):
    state["items"].append(event["data"]["sku"])
    state["total"] += event["data"]["price"]
    state["cents"] += event["data"]["price"] * 100


@carts.on("cart.checked_out")
def _checked_out(state, event):
    state["status"] = "checked_out"
