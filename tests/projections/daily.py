"""Keyed projections defined with the public API only (tests load them with --module):
`daily_logins` (one document per UTC day) and `tenants` (one per data.tenant)."""

from evstream.projections import Projection

daily = Projection(
    name="daily_logins",
    collection="daily_logins",
    version=1,
    types=["login"],
    key="ts:day",
    initial={"logins": 0, "users": []},
)


@daily.on("login")
def _login(state, event):
    state["logins"] += 1
    if event["data"]["username"] not in state["users"]:
        state["users"].append(event["data"]["username"])


tenants = Projection(
    name="tenants",
    collection="tenants",
    version=1,
    types=["login", "order.placed"],
    key="data.tenant",
    initial={"logins": 0, "orders": [], "seq": []},
)


@tenants.on("login")
def _tenant_login(state, event):
    state["logins"] += 1
    state["seq"].append(event["_id"])


@tenants.on("order.placed")
def _tenant_order(state, event):
    state["orders"].append(event["data"]["amount"])
    state["seq"].append(event["_id"])
