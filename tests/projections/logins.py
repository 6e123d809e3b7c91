"""A user's projection and upcasters, with the public API only (tests load it with --module):
`user.login` was renamed `login` (a rename), and `login`'s `data.user` became `data.username`
(a shape change), so an old event goes through both."""

from evstream.projections import Projection, upcaster


@upcaster("user.login", to="login")
def _renamed(event):
    return {**event, "type": "login"}


@upcaster("login", when=lambda e: "user" in e["data"], to="login")
def _reshaped(event):
    data = {k: v for k, v in event["data"].items() if k != "user"}
    return {**event, "data": {**data, "username": event["data"]["user"]}}


logins = Projection(
    name="logins",
    collection="logins",
    version=1,
    types=["login"],
    initial={"count": 0, "users": []},
)


@logins.on("login")
def _login(state, event):
    state["count"] += 1
    state["users"].append(event["data"]["username"])
