"""Where output goes: data as JSON lines (or rich renderables) on stdout; notices, warnings,
errors and progress on stderr.

rich is imported only when something is printed through it: a command whose output is JSON
lines (`publish -o json`, the common case in scripts) never loads it. The renderables
themselves are built in evstream.output.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any

from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from evstream.fieldmap import Canonical

if TYPE_CHECKING:
    from rich.console import Console

JSON_OPTIONS = RELAXED_JSON_OPTIONS


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_EPOCH = datetime(1970, 1, 1)
_ZERO = timedelta(0)
_UTC_ZONES = (timezone.utc, json_util.utc)  # the driver's dates come in bson's own utc


def _bson_default(value: Any) -> Any:
    """json_util.default in relaxed mode, with the common UTC date done without strftime."""
    if type(value) is datetime:
        tz = value.tzinfo
        if tz is _UTC_ZONES[0] or tz is _UTC_ZONES[1]:
            if 1970 <= value.year <= 9999:  # at or after the epoch: no aware comparison
                text = value.isoformat(timespec="milliseconds")[:-6]  # without +00:00
                return {"$date": (text[:-4] if text.endswith(".000") else text) + "Z"}
        else:
            offset = value.utcoffset()
            if (offset is None or offset == _ZERO) and value.year <= 9999:
                plain = value.replace(tzinfo=None)
                if plain >= _EPOCH:
                    text = plain.isoformat(timespec="milliseconds")
                    return {"$date": (text[:-4] if text.endswith(".000") else text) + "Z"}
    return json_util.default(value, JSON_OPTIONS)


def _one_line_encoder() -> Callable[[Any], str]:
    """json.dumps(doc, default=_bson_default, ensure_ascii=False, allow_nan=False), built once:
    json.dumps makes a new encoder (and its C encoder) on every call with these options."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    c_encode = getattr(json.encoder, "c_encode_basestring", None)
    if c_make_encoder is None or c_encode is None:  # not CPython: the plain way
        encoder = json.JSONEncoder(default=_bson_default, ensure_ascii=False, allow_nan=False)
        return encoder.encode
    # markers=None: no check for circular containers, which a decoded document cannot have.
    make = c_make_encoder(None, _bson_default, c_encode, None, ": ", ", ", False, False, False)

    def encode(doc: Any) -> str:
        return "".join(make(doc, 0))

    return encode


_encode = _one_line_encoder()


def json_line(doc: Mapping[str, Any]) -> str:
    """One document as relaxed Extended JSON on one line, as other MongoDB tools read it.

    The same bytes as json_util.dumps, several times faster: json_util.dumps first copies the
    whole document in Python, while here the C encoder walks it and only BSON types (dates,
    ObjectIds …) go through `_bson_default`. Anything unusual (NaN, sets …) takes json_util.
    A canonical event read through a field map prints as stored (docs/adopting.md).
    """
    if type(doc) is Canonical:
        doc = doc.stored
    try:
        return _encode(doc)
    except (TypeError, ValueError, RecursionError):
        return json_util.dumps(doc, json_options=JSON_OPTIONS, ensure_ascii=False)


def renderer(name: str, **options: Any) -> Callable[[Any], Any]:
    """The view `evstream.output.<name>(data, **options)`, for `Output.result`: imported only
    when pretty output needs it, so JSON lines never load rich."""

    def view(data: Any) -> Any:
        from evstream import output

        return getattr(output, name)(data, **options)

    return view


class Plain(str):
    """A line for stdout written as it is: no markup, no highlighting (a server log line)."""


class Output:
    """Where and how a command shows things: one object per invocation, as httpie's Environment."""

    def __init__(
        self,
        mode: str = "auto",
        *,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        quiet: bool = False,
    ) -> None:
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        if mode == "auto":
            # A real terminal, not rich's is_terminal: FORCE_COLOR must colour, not change format.
            mode = "pretty" if _isatty(self.stdout) else "json"
        self.mode = mode

    @cached_property
    def out(self) -> Console:
        """rich's console on stdout, made on first use."""
        from rich.console import Console

        return Console(file=self.stdout, soft_wrap=True)

    @cached_property
    def err(self) -> Console:
        """rich's console on stderr, made on first use."""
        from rich.console import Console

        return Console(file=self.stderr, soft_wrap=True, highlight=False)

    @property
    def json(self) -> bool:
        """Whether data is written as JSON lines."""
        return self.mode == "json"

    @property
    def interactive(self) -> bool:
        """Whether stderr is a terminal, so progress bars make sense there."""
        return _isatty(self.stderr)

    # --- data on stdout ---

    def emit(self, doc: Mapping[str, Any], *, flush: bool = True) -> None:
        """Write one JSON line to stdout and flush it, so `| head` and `| jq` see it at once.

        `flush=False` leaves it in the buffer for a caller that flushes (`flush`) before it
        waits for anything: a backlog is written a buffer at a time, not a line at a time."""
        self.stdout.write(json_line(doc) + "\n")
        if flush:
            self.stdout.flush()

    def flush(self) -> None:
        """Flush stdout: every line emitted so far reaches its reader."""
        self.stdout.flush()

    @property
    def to_terminal(self) -> bool:
        """Whether stdout is a terminal (a person reads each line as it comes)."""
        return _isatty(self.stdout)

    def result(
        self,
        data: Mapping[str, Any] | Iterable[Mapping[str, Any]],
        view: Callable[[Any], Any] | None = None,
    ) -> None:
        """A command's result, in the format asked for; commands never choose it themselves.

        With JSON output, `data` as JSON lines: an object, or each object of a list. Otherwise
        what `view(data)` builds: a rich renderable, a `Plain` line, a list of those (printed
        one after another), or None for nothing more (a view may also say things on stderr, as
        publish --check lists the bad lines there).
        """
        if self.json:
            for doc in (data,) if isinstance(data, Mapping) else data:
                self.emit(doc)
            return
        shown = None if view is None else view(data)
        for item in shown if isinstance(shown, list) else () if shown is None else (shown,):
            if isinstance(item, Plain):
                self.stdout.write(item + "\n")
                self.stdout.flush()
            else:
                self.show(item)

    @property
    def width(self) -> int | None:
        """The columns pretty output may fill (the terminal's, else rich's default); None when
        the output is JSON lines, which have no width."""
        return None if self.json else self.out.width

    def show(self, renderable: Any) -> None:
        """Print a rich renderable (pretty mode) to stdout."""
        self.out.print(renderable)
        self.stdout.flush()

    # --- everything else on stderr ---

    def notice(self, message: str) -> None:
        """An informational line on stderr (none with --quiet)."""
        if not self.quiet:
            from rich.text import Text

            self.err.print(Text(message, style="dim"))

    def warning(self, message: str) -> None:
        """A warning line on stderr."""
        from rich.text import Text

        self.err.print(Text.assemble(("warning: ", "bold yellow"), message))

    def error(self, message: str) -> None:
        """The one error line on stderr."""
        from rich.text import Text

        self.err.print(Text.assemble(("error: ", "bold red"), message))

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[Callable[[str], None]]:
        """A spinner with a changing message on stderr when it is a terminal; yields say(text)."""
        if not self.interactive:
            yield lambda text: None
            return
        with self.err.status(message) as spinner:
            yield lambda text: spinner.update(text)

    @contextlib.contextmanager
    def progress(
        self,
        description: str,
        total: float | None = None,
        unit: str = "",
        *,
        counts: str = "events",
    ) -> Iterator[Callable[[float], None]]:
        """A progress bar on stderr when it is a terminal; yields advance(n). Silent otherwise.

        It counts `counts` (events) and shows their rate in `counts`/s. With unit "bytes", the
        bar moves by the bytes of input read (a file's size is its total) and each call of
        advance is one more of `counts` (one line, one event).
        """
        if not self.interactive:
            yield lambda n: None
            return
        from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
        from rich.text import Text

        from evstream.output import progress_figures

        by_bytes = unit == "bytes"
        started = time.monotonic()
        state = {"items": 0.0, "done": 0.0}

        def figures() -> str:
            return progress_figures(
                state["items"],
                state["done"],
                total,
                time.monotonic() - started,
                counts=counts,
                by_bytes=by_bytes,
            )

        class Figures(ProgressColumn):
            """Count, rate, elapsed and remaining time, worked out afresh at every refresh."""

            def render(self, task: Any) -> Text:
                return Text(figures(), style="progress.data.speed")

        columns: list[Any] = [TextColumn("[progress.description]{task.description}")]
        if total:
            columns += [
                BarColumn(bar_width=24),
                TextColumn("[progress.percentage]{task.percentage:>3.0f}%"),
            ]
        columns.append(Figures())
        with Progress(*columns, console=self.err, transient=True) as bar:
            task = bar.add_task(description, total=total)

            def advance(n: float) -> None:
                state["items"] += 1 if by_bytes else n
                state["done"] += n
                bar.update(task, advance=n)

            yield advance
