"""Rendering: pretty (rich) on a terminal, relaxed Extended JSON lines when piped.

Data goes to stdout; progress, notices, warnings and errors go to stderr. rich decides colour
(NO_COLOR, FORCE_COLOR, not a terminal).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import IO, Any

from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS
from rich.console import Console
from rich.text import Text

from evstream.events import REDACTED, redact

JSON_OPTIONS = RELAXED_JSON_OPTIONS


def json_line(doc: Mapping[str, Any]) -> str:
    """One document as relaxed Extended JSON on one line, as other MongoDB tools read it."""
    return json_util.dumps(doc, json_options=JSON_OPTIONS, ensure_ascii=False)


class Output:
    """Where and how a command shows things: one object per invocation, as httpie's Environment."""

    def __init__(
        self,
        mode: str = "auto",
        *,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.out = Console(file=self.stdout, soft_wrap=True)
        self.err = Console(file=self.stderr, soft_wrap=True, highlight=False)
        if mode == "auto":
            mode = "pretty" if self.out.is_terminal else "json"
        self.mode = mode

    @property
    def json(self) -> bool:
        """Whether data is written as JSON lines."""
        return self.mode == "json"

    @property
    def interactive(self) -> bool:
        """Whether stderr is a terminal, so progress bars make sense there."""
        return self.err.is_terminal

    # --- data on stdout ---

    def emit(self, doc: Mapping[str, Any]) -> None:
        """Write one JSON line to stdout and flush it, so `| head` and `| jq` see it at once."""
        self.stdout.write(json_line(doc) + "\n")
        self.stdout.flush()

    def show(self, renderable: Any) -> None:
        """Print a rich renderable (pretty mode) to stdout."""
        self.out.print(renderable)
        self.stdout.flush()

    # --- everything else on stderr ---

    def notice(self, message: str) -> None:
        """An informational line on stderr."""
        self.err.print(Text(message, style="dim"))

    def warning(self, message: str) -> None:
        """A warning line on stderr."""
        self.err.print(Text.assemble(("warning: ", "bold yellow"), message))

    def error(self, message: str) -> None:
        """The one error line on stderr."""
        self.err.print(Text.assemble(("error: ", "bold red"), message))

    @contextlib.contextmanager
    def progress(
        self, description: str, total: float | None = None
    ) -> Iterator[Callable[[float], None]]:
        """A progress bar on stderr when it is a terminal; yields advance(n). Silent otherwise."""
        if not self.interactive:
            yield lambda n: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TaskProgressColumn() if total else MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        started = time.monotonic()
        with Progress(*columns, console=self.err, transient=True) as bar:
            task = bar.add_task(description, total=total, rate="")
            done = [0.0]

            def advance(n: float) -> None:
                done[0] += n
                elapsed = max(time.monotonic() - started, 1e-6)
                bar.update(task, advance=n, rate=f"{done[0] / elapsed:,.0f}/s")

            yield advance


# --- events ------------------------------------------------------------------------------------


def local_time(ts: Any) -> str:
    """A BSON date as local wall-clock time, HH:MM:SS.mmm."""
    if not isinstance(ts, datetime):
        return "--:--:--.---"
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    local = ts.astimezone()
    return local.strftime("%H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def compact_value(value: Any, *, width: int = 60) -> Text:
    """A JSON value rendered compactly on one line, with keys and values coloured, cut at width."""
    text = Text()
    _append_value(text, value)
    if len(text) > width:
        text.truncate(max(width - 1, 1))
        text.append("…", style="dim")
    return text


def _append_value(text: Text, value: Any) -> None:
    if isinstance(value, Mapping):
        text.append("{", style="dim")
        for i, (key, item) in enumerate(value.items()):
            if i:
                text.append(", ", style="dim")
            text.append(str(key), style="cyan")
            text.append(": ", style="dim")
            _append_value(text, item)
        text.append("}", style="dim")
    elif isinstance(value, (list, tuple)):
        text.append("[", style="dim")
        for i, item in enumerate(value):
            if i:
                text.append(", ", style="dim")
            _append_value(text, item)
        text.append("]", style="dim")
    elif isinstance(value, str):
        style = "magenta" if value == REDACTED or value == MASK else "green"
        text.append(json_util.dumps(value, ensure_ascii=False), style=style)
    elif isinstance(value, bool) or value is None:
        text.append(json_util.dumps(value), style="italic yellow")
    elif isinstance(value, (int, float)):
        text.append(repr(value), style="yellow")
    elif isinstance(value, datetime):
        text.append(value.isoformat(), style="blue")
    else:
        text.append(str(value), style="blue")


MASK = "****"


def masked(value: Any, show_secrets: bool) -> Any:
    """`value` with secret-looking fields masked for display, unless secrets are to be shown."""
    return value if show_secrets else redact(value, mask=MASK)[0]


def event_line(
    doc: Mapping[str, Any], *, show_secrets: bool = False, op: str | None = None
) -> Text:
    """One event on one line: time, [operation,] type, stream@version, the data compactly."""
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(local_time(doc.get("ts")), style="dim")
    if op:
        line.append(f" {op:<7}", style=OP_STYLES.get(op, "bold"))
    line.append(" ")
    line.append(str(doc.get("type", "?")), style="bold")
    line.append(" ")
    line.append(str(doc.get("stream", "?")), style="bold blue")
    line.append(f"@{doc.get('version', '?')}", style="blue")
    data = doc.get("data")
    if data:
        line.append(" ")
        line.append_text(compact_value(masked(data, show_secrets), width=100))
    return line


OP_STYLES = {
    "insert": "bold green",
    "update": "bold yellow",
    "replace": "bold yellow",
    "delete": "bold red",
}


def summary_text(title: str, fields: Mapping[str, Any]) -> Text:
    """A one-line summary: 'Published: 3 published · 1 duplicate · 0 skipped · 812 events/s'."""
    text = Text()
    text.append(title, style="bold")
    for i, (name, value) in enumerate(fields.items()):
        text.append(": " if i == 0 else " · ", style="dim")
        if isinstance(value, float):
            text.append(f"{value:,.2f}", style="cyan")
        elif isinstance(value, int):
            text.append(f"{value:,}", style="cyan")
        else:
            text.append(str(value), style="cyan")
        text.append(f" {name}")
    return text


def human_bytes(size: float) -> str:
    """1536 → '1.5 KB'."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def server_status_text(info: Mapping[str, Any]) -> Text:
    """`evstream server status` for a person."""
    text = Text()
    if info["running"]:
        text.append("running", style="bold green")
        text.append(f" at {info['uri']} (pid {info['pid']})\n")
    else:
        text.append("not running", style="bold red")
        text.append(" (it starts by itself on the next command, or with `evstream server start`)\n")
    text.append(f"data: {info['data_dir']} ({human_bytes(info['data_bytes'])})\n", style="dim")
    text.append(f"log:  {info['log_file']}", style="dim")
    return text


# --- watch ---------------------------------------------------------------------------------------

# --- rebuild-sessions ----------------------------------------------------------------------------

# --- status --------------------------------------------------------------------------------------
