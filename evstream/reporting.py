"""What a service reports as it goes, through callbacks its caller passes in.

The CLI passes its Output's (a progress bar or a spinner on a terminal, notices and warnings on
stderr); the Python API passes nothing, or its own. The defaults here do nothing. Standard
library only: no typer, no rich.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

Advance = Callable[[float], None]
Say = Callable[[str], None]


class Progress(Protocol):
    """A progress display for one pass (`Output.progress`): a context manager that yields
    `advance(n)`. `unit` "bytes" moves it by bytes read, each call counting one of `counts`."""

    def __call__(
        self,
        description: str,
        total: float | None = None,
        unit: str = "",
        *,
        counts: str = "events",
    ) -> AbstractContextManager[Advance]: ...


class Status(Protocol):
    """A status line while something without a count runs (`Output.status`): yields say(text)."""

    def __call__(self, message: str) -> AbstractContextManager[Say]: ...


@contextlib.contextmanager
def no_progress(
    description: str, total: float | None = None, unit: str = "", *, counts: str = "events"
) -> Iterator[Advance]:
    """Progress that shows nothing."""
    yield lambda n: None


@contextlib.contextmanager
def no_status(message: str) -> Iterator[Say]:
    """A status that shows nothing."""
    yield lambda text: None


def ignore(message: str) -> None:
    """A notice or warning nobody shows."""
