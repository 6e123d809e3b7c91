"""Another module that also defines a projection named carts: refused beside carts.py."""

from evstream.projections import Projection

carts = Projection(name="carts", collection="carts2", version=1, types=["x"], initial={})
