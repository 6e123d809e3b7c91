"""evstream.cli.values gives every parameter the value (or the error) Typer's own coercion gives."""

import math

import pytest
import typer
import typer.main

from evstream.cli import app
from evstream.cli.values import PlainRuntimeParam, plain_values

pytest.importorskip("typer._coercion")
from typer._coercion import build_runtime_param  # noqa: E402

VALUES = [
    "5", "0", "-1", "007", "+3", " 4", "4 ", "1_000", "1.5", "1.", ".5", "1e3", "abc", "",
    "100000", "100001", "nan", "inf", "٣", "json", "JSON", "Pretty", "insert", "DELETE", "x",
    5, 0, -1, 2.5, True, False, None, ("a", "b"), ("insert", "DELETE"), (), ("x",), ("1", "y"),
]  # fmt: skip


def every_param(command, parent=None):
    ctx = typer.Context(command, parent=parent, **(command.context_settings or {}))
    for param in command.get_params(ctx):
        yield ctx, param
    for sub in getattr(command, "commands", {}).values():
        yield from every_param(sub, ctx)


def outcome(runtime, value, param, ctx):
    try:
        result = runtime.coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # the error a user would see
        return ("error", type(exc).__name__, str(exc))
    if isinstance(result, float) and math.isnan(result):
        return ("nan", float)
    return ("value", result, type(result))


def test_every_parameter_coerces_as_typer_does():
    command = typer.main.get_command(app)
    compared = 0
    for ctx, param in every_param(command):
        desc = param.type_descriptor
        plain = PlainRuntimeParam(
            parameter_info=desc.parameter_info, annotation=desc.annotation, descriptor=desc
        )
        typers = build_runtime_param(desc)
        for value in VALUES:
            assert outcome(plain, value, param, ctx) == outcome(typers, value, param, ctx), (
                param.opts,
                value,
            )
            compared += 1
    assert compared > 1000


def test_every_parameter_gets_the_plain_coercer():
    command = typer.main.get_command(app)
    plain_values(command)
    for _, param in every_param(command):
        assert isinstance(param._runtime_param, PlainRuntimeParam), param.opts
