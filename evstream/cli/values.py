"""Command-line values turned into Python ones without pydantic, where that is plain.

Typer (0.25 and later) coerces every parameter through a pydantic TypeAdapter, built on the
parameter's first use: importing pydantic and building the adapters for one `evstream publish`
costs about 60-80 ms, most of what that command spends before it talks to MongoDB. evstream's
parameters are plain (str, bool, int and float with bounds, str enums, lists of those), so each
parameter gets a coercer that handles a well-formed value in plain Python and hands anything
else (a bad number, an unknown choice, a value out of range) to Typer's own adapter, which
builds the error message users and tests know. The result is the value Typer would have given.
"""

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, get_args, get_origin

from typer import Context

try:  # Typer's internals: where they differ (another Typer release), Typer's own path is kept.
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_choice
except ImportError:  # pragma: no cover
    RuntimeParam = None  # type: ignore[assignment,misc]

INTEGER = re.compile(r"-?[0-9]+")
DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class NotPlain(Exception):
    """The value needs Typer's own coercion (or its error message)."""


def _leaf(annotation: Any, info: Any, value: Any, ctx: Any) -> Any:
    """A plain value of `annotation`, as Typer's adapter gives it; else NotPlain."""
    if annotation is str and isinstance(value, str):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int or annotation is float:
        if isinstance(value, bool):
            raise NotPlain
        if isinstance(value, str):
            if not (INTEGER if annotation is int else DECIMAL).fullmatch(value):
                raise NotPlain
        elif not isinstance(value, int if annotation is int else (int, float)):
            raise NotPlain
        number = annotation(value)
        if getattr(info, "clamp", False):
            raise NotPlain
        if (info.min is not None and number < info.min) or (
            info.max is not None and number > info.max
        ):
            raise NotPlain
        return number
    if isinstance(annotation, type) and issubclass(annotation, Enum) and info.parser is None:
        try:
            return coerce_cli_choice(
                value, choices=tuple(annotation), case_sensitive=info.case_sensitive, ctx=ctx
            )
        except ValueError:
            raise NotPlain from None
    raise NotPlain


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class PlainRuntimeParam(RuntimeParam):
        """Typer's per-parameter coercer, with a pydantic-free path for plain values."""

        descriptor: Any

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            info = self.parameter_info
            try:
                if get_origin(self.annotation) is list and isinstance(value, (list, tuple)):
                    (item,) = get_args(self.annotation)
                    return [_leaf(item, info, v, ctx) for v in value]
                return _leaf(self.annotation, info, value, ctx)
            except NotPlain:
                typers = build_runtime_param(self.descriptor)
                return typers._coerce_value(value, param=param, ctx=ctx)


def plain_values(command: Any, parent: Any = None) -> None:
    """Give every parameter of `command` and its subcommands (their --help included, which
    Typer makes per context) the pydantic-free coercer."""
    if RuntimeParam is None:  # pragma: no cover
        return
    ctx = Context(command, parent=parent, **(getattr(command, "context_settings", None) or {}))
    for param in command.get_params(ctx):
        descriptor = getattr(param, "type_descriptor", None)
        if (
            descriptor is not None
            and getattr(param, "_runtime_param", False) is None
            and descriptor.file_annotation is None
            and descriptor.parameter_info.parser is None
        ):
            param._runtime_param = PlainRuntimeParam(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                descriptor=descriptor,
            )
    for sub in getattr(command, "commands", {}).values():
        plain_values(sub, ctx)
