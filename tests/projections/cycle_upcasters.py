"""Upcasters whose declared types form a cycle: refused when the module loads."""

from evstream.projections import upcaster


@upcaster("a", to="b")
def _a(event):
    return {**event, "type": "b"}


@upcaster("b", to="a")
def _b(event):
    return {**event, "type": "a"}
