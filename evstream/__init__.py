"""evstream: event streams in MongoDB, from the command line and from Python.

    import evstream

    with evstream.connect() as log:
        log.append("login", "alice", {"username": "alice"})

`connect` and the exception classes load on first use (module `__getattr__`), so that
`import evstream` (the CLI's `--help`, shell completion) never imports pymongo.
See docs/python-api.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ imports them on first use
    from evstream.client import Client as Client
    from evstream.client import Follow as Follow
    from evstream.client import connect as connect
    from evstream.errors import ConcurrencyConflict as ConcurrencyConflict
    from evstream.errors import Conflict as Conflict
    from evstream.errors import ConnectionLost as ConnectionLost
    from evstream.errors import Error as Error
    from evstream.errors import EvstreamError as EvstreamError
    from evstream.errors import ExitCode as ExitCode
    from evstream.errors import FeatureUnsupported as FeatureUnsupported
    from evstream.errors import HistoryLost as HistoryLost
    from evstream.errors import IndexProblem as IndexProblem
    from evstream.errors import Interrupted as Interrupted
    from evstream.errors import InvalidInput as InvalidInput
    from evstream.errors import NotAuthorized as NotAuthorized
    from evstream.errors import ServerUnreachable as ServerUnreachable
    from evstream.errors import Unsupported as Unsupported
    from evstream.events import InvalidEvent as InvalidEvent
    from evstream.projections import HandlerFailed as HandlerFailed
    from evstream.projections import Projection as Projection
    from evstream.watching import Change as Change
    from evstream.watching import CheckpointLost as CheckpointLost
    from evstream.watching import CollectionGone as CollectionGone

_LAZY = {
    "connect": "evstream.client",
    "Client": "evstream.client",
    "Follow": "evstream.client",
    "Change": "evstream.watching",
    "CheckpointLost": "evstream.watching",
    "CollectionGone": "evstream.watching",
    "Projection": "evstream.projections",
    "HandlerFailed": "evstream.projections",
    "InvalidEvent": "evstream.events",
    **{
        name: "evstream.errors"
        for name in (
            "ConcurrencyConflict",
            "Conflict",
            "ConnectionLost",
            "Error",
            "EvstreamError",
            "ExitCode",
            "FeatureUnsupported",
            "HistoryLost",
            "IndexProblem",
            "Interrupted",
            "InvalidInput",
            "NotAuthorized",
            "ServerUnreachable",
            "Unsupported",
        )
    },
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evstream' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
