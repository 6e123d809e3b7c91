"""Two projections with the same collection: refused."""

from evstream.projections import Projection

orders = Projection(name="orders", collection="shared", version=1, types=["o"], initial={})
returns = Projection(name="returns", collection="shared", version=1, types=["r"], initial={})
