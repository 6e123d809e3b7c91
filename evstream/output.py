"""Rendering: pretty (rich) on a terminal, relaxed Extended JSON lines when piped.

Data goes to stdout; progress, notices, warnings and errors go to stderr. rich decides colour
(NO_COLOR, FORCE_COLOR, not a terminal).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from bson import json_util
from rich.text import Text

from evstream.events import MASK, REDACTED, has_secret, redact
from evstream.fieldmap import Canonical

# Output and JSON lines live in evstream.writer, which needs rich only once something is printed
# through it (the JSON path of `publish` never does); they are imported from here as before.
from evstream.writer import JSON_OPTIONS as JSON_OPTIONS
from evstream.writer import Output as Output
from evstream.writer import _bson_default
from evstream.writer import json_line as json_line


def progress_figures(
    items: float,
    done: float,
    total: float | None,
    elapsed: float,
    *,
    counts: str = "events",
    by_bytes: bool = False,
) -> str:
    """What a progress bar says beside the bar: '1,200/5,000 events · 400 events/s ·
    elapsed 0:03 · remaining 0:10'. The remaining time comes from the average rate so far, so
    it keeps moving between updates too."""
    elapsed = max(elapsed, 1e-6)
    count = f"{items:,.0f}/{total:,.0f}" if total and not by_bytes else f"{items:,.0f}"
    parts = [
        f"{count} {counts}",
        f"{items / elapsed:,.0f} {counts}/s",
        f"elapsed {_clock(elapsed)}",
    ]
    if total:
        left = (total - done) * elapsed / done if done > 0 else None
        parts.append(f"remaining {_clock(left) if left is not None else '…'}")
    return " · ".join(parts)


def _clock(seconds: float) -> str:
    """Seconds as H:MM:SS (or M:SS under an hour)."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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


def summary_text(title: str, fields: Mapping[Any, Any]) -> Text:
    """A one-line summary: 'Published: 3 events · 1 duplicate · 0 skipped · 812 events/s'.

    A field named by a (singular, plural) pair takes the form its count needs; a plain name
    (a unit such as events/s) is shown as it is.
    """
    text = Text()
    text.append(title, style="bold")
    for i, (label, value) in enumerate(fields.items()):
        name = label if isinstance(label, str) else label[0 if value == 1 else 1]
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


# --- watch ---------------------------------------------------------------------------------------


def watch_record(
    op: str,
    collection: str,
    key: Mapping[str, Any],
    doc: Mapping[str, Any] | None,
    *,
    show_secrets: bool = False,
    canonical: bool = False,
) -> dict[str, Any]:
    """A change as its JSON line: {"op", "collection", "key", "doc"}, secrets masked. A log
    event read through a field map is printed as stored, or with `canonical` as the canonical
    event (docs/adopting.md)."""
    if type(doc) is Canonical:
        doc = dict(doc) if canonical else doc.stored
    if doc is not None and not show_secrets and has_secret(doc):
        doc = redact(doc, mask=MASK)[0]  # else the document itself, as stored
    return {"op": op, "collection": collection, "key": dict(key), "doc": doc}


TYPE_COLUMN_MIN = 15  # session.started: the first lines already line up with the next ones
STREAM_COLUMN_MIN = 10
TYPE_COLUMN_MAX = 24  # a longer type is shown whole, and only its own line is out of step
STREAM_COLUMN_MAX = 28
NOT_AN_EVENT = "not an event"


class WatchView:
    """Changes shown to a person, one after another (docs/watch-view.md).

    It remembers what it has shown so that lines line up: the type and stream columns are as
    wide as the widest seen so far (up to a cap), and once one event is not from today every
    line carries its date. Documents of `events` that are not events (no stream, a string ts …)
    are marked as such, never shown as if their fields were data, and counted.
    """

    def __init__(
        self,
        *,
        show_secrets: bool = False,
        full: bool = False,
        width: int | None = None,
        now: datetime | None = None,
    ) -> None:
        self.show_secrets = show_secrets
        self.full = full
        self.width = width
        self.today = (now or datetime.now(timezone.utc)).astimezone().date()
        self.dated = False
        self.type_width = TYPE_COLUMN_MIN
        self.stream_width = STREAM_COLUMN_MIN
        self.not_events: dict[str, int] = {}
        self.sample_ids: list[Any] = []

    def render(
        self,
        op: str,
        collection: str,
        key: Mapping[str, Any],
        doc: Mapping[str, Any] | None,
        when: Any = None,
        *,
        update: Mapping[str, Any] | None = None,
    ) -> Any:
        """One change: a line cut to the width, and with `full` the document under it."""
        from evstream.events import event_problem

        body: Any = None
        mapped = type(doc) is Canonical
        if doc is not None and (mapped or collection == "events"):
            problem = event_problem(doc, doc.versioned if mapped else True)  # type: ignore[union-attr]
            if problem is None:
                line = self._event_line(op, doc)
                body = doc.get("data")
            else:
                line = self._not_event_line(op, key, doc, when, problem)
                body = {k: v for k, v in doc.items() if k != "_id"}
        else:
            line, body = self._change_line(op, collection, key, doc, when, update)
        if self.width:
            line.truncate(self.width, overflow="ellipsis")
        if not self.full or not body:
            return line
        from rich.json import JSON

        pretty = JSON.from_data(masked(body, self.show_secrets), indent=2, default=_bson_default)
        whole = Text(no_wrap=True)  # not cut: a long value runs on as the terminal wraps it
        whole.append_text(line)
        for row in pretty.text.split("\n"):
            whole.append("\n  ")
            whole.append_text(row)
        return whole

    def summary(self) -> str | None:
        """What was not an event, for stderr at the end; None when everything was."""
        total = sum(self.not_events.values())
        if not total:
            return None
        kinds = ", ".join(f"{kind}: {n:,}" for kind, n in self.not_events.items())
        ids = ", ".join(str(i) for i in self.sample_ids)
        return (
            f"{plural(total, 'document')} in events {'was' if total == 1 else 'were'} not "
            f"{'an event' if total == 1 else 'events'} ({kinds}), shown marked "
            f"[{NOT_AN_EVENT}: …]; first _id{'s' * (len(self.sample_ids) != 1)}: {ids}"
        )

    # --- the parts of a line ---

    def _time(self, moment: Any) -> Text:
        if isinstance(moment, datetime):
            local = _as_utc(moment).astimezone()
            if local.date() != self.today:
                self.dated = True
            clock = local.strftime("%H:%M:%S.") + f"{local.microsecond // 1000:03d}"
            return Text(f"{local:%Y-%m-%d} {clock}" if self.dated else clock, style="dim")
        return Text("----------- " * self.dated + "--:--:--.---", style="dim")

    def _event_line(self, op: str, doc: Mapping[str, Any]) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append_text(self._time(doc.get("ts")))
        if op != "insert":  # the log is appended to: an insert goes without saying
            line.append(f" {op:<7}", style=OP_STYLES.get(op, "bold"))
        version = doc.get("version")
        kind = str(doc["type"])
        where = str(doc["stream"]) if version is None else f"{doc['stream']}@{version}"
        self.type_width = max(self.type_width, min(len(kind), TYPE_COLUMN_MAX))
        self.stream_width = max(self.stream_width, min(len(where), STREAM_COLUMN_MAX))
        line.append(" ")
        line.append(kind.ljust(self.type_width), style="bold")
        line.append(" ")
        line.append(str(doc["stream"]), style="bold blue")
        if version is not None:
            line.append(f"@{version}", style="blue")
        line.append(" " * (self.stream_width - len(where)))
        data = doc.get("data")
        if data and not self.full:
            line.append(" ")
            line.append_text(compact_value(masked(data, self.show_secrets), width=100))
        line.rstrip()
        return line

    def _not_event_line(
        self, op: str, key: Mapping[str, Any], doc: Mapping[str, Any], when: Any, problem: str
    ) -> Text:
        self.not_events[problem] = self.not_events.get(problem, 0) + 1
        if len(self.sample_ids) < 3:
            self.sample_ids.append(doc.get("_id", key.get("_id")))
        line = Text(no_wrap=True, overflow="ellipsis")
        ts = doc.get("ts")
        line.append_text(self._time(ts if isinstance(ts, datetime) else when))
        if op != "insert":
            line.append(f" {op:<7}", style=OP_STYLES.get(op, "bold"))
        line.append(" ")
        line.append(f"[{NOT_AN_EVENT}: {problem}]", style="bold yellow")
        line.append(" _id ", style="dim")
        line.append_text(_key_text({"_id": doc.get("_id", key.get("_id"))}))
        body = {k: v for k, v in doc.items() if k != "_id"}
        if body and not self.full:
            line.append(" ")
            line.append_text(compact_value(masked(body, self.show_secrets), width=100))
        return line

    def _change_line(
        self,
        op: str,
        collection: str,
        key: Mapping[str, Any],
        doc: Mapping[str, Any] | None,
        when: Any,
        update: Mapping[str, Any] | None,
    ) -> tuple[Text, Any]:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append_text(self._time(when))
        line.append(f" {op:<7}", style=OP_STYLES.get(op, "bold"))
        line.append(" ")
        line.append(collection, style="bold")
        line.append(" ")
        line.append_text(_key_text(key))
        changed = _update_parts(update) if op == "update" else None
        body: Any = {k: v for k, v in (doc or {}).items() if k != "_id"}
        if changed is not None:
            body = changed  # what the update changed, not the whole document
        if body and not self.full:
            line.append(" ")
            line.append_text(compact_value(masked(body, self.show_secrets), width=200))
        return line, body


def _update_parts(update: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An update's updateDescription as {"set": {...}, "unset": [...]}; None when not given."""
    if not update:
        return None
    parts: dict[str, Any] = {}
    if update.get("updatedFields"):
        parts["set"] = dict(update["updatedFields"])
    if update.get("removedFields"):
        parts["unset"] = list(update["removedFields"])
    if update.get("truncatedArrays"):
        parts["truncated"] = list(update["truncatedArrays"])
    return parts or None


def plural(n: int, noun: str, plural_form: str | None = None) -> str:
    """'1 session', '2 sessions', '30,000 events'."""
    return f"{n:,} {noun if n == 1 else plural_form or noun + 's'}"


def watch_line(
    op: str,
    collection: str,
    key: Mapping[str, Any],
    doc: Mapping[str, Any] | None,
    when: Any = None,
    *,
    show_secrets: bool = False,
    width: int | None = None,
    update: Mapping[str, Any] | None = None,
) -> Text:
    """A change on one line, cut to `width`, as a fresh WatchView shows it."""
    view = WatchView(show_secrets=show_secrets, width=width)
    line = view.render(op, collection, key, doc, when, update=update)
    assert isinstance(line, Text)
    return line


class ChangePrinter:
    """A watch's changes on stdout in the format asked for: each a JSON line as it is
    (`watch_record`), or a line of the pretty view (`WatchView`)."""

    def __init__(
        self,
        out: Output,
        *,
        show_secrets: bool = False,
        full: bool = False,
        canonical: bool = False,
    ) -> None:
        self.out = out
        self.show_secrets = show_secrets
        self.canonical = canonical  # a mapped log's events as canonical events (--canonical)
        self.view = WatchView(show_secrets=show_secrets, full=full, width=out.out.width)
        # JSON lines into a file or pipe are flushed by `written`, which the watch calls before
        # it waits for anything (Hooks.written); on a terminal each line is flushed as written.
        self.buffered = out.json and not out.to_terminal

    def __call__(self, change: Any) -> None:
        """Print one change (`evstream.watching.Change`)."""
        (self._json if self.out.json else self._pretty)(change)

    def _json(self, change: Any) -> None:
        record = watch_record(
            change.op,
            change.collection,
            change.key,
            change.doc,
            show_secrets=self.show_secrets,
            canonical=self.canonical,
        )
        self.out.emit(record, flush=not self.buffered)

    def _pretty(self, change: Any) -> None:
        update = change.update  # updateDescription, where the server gives one
        self.out.show(
            self.view.render(
                change.op, change.collection, change.key, change.doc, change.when, update=update
            )
        )

    def written(self) -> None:
        """Every line printed so far reaches the reader of stdout (Hooks.written)."""
        if self.buffered:
            self.out.flush()

    def close(self) -> None:
        """Say how many documents of events were not events (the pretty view only)."""
        summary = self.view.summary()
        if summary and not self.out.json:
            self.out.warning(summary)


def handler_line(change: Any, *, show_secrets: bool = False) -> str:
    """A change as the JSON line `watch --exec` hands its handler (as `-o json --canonical`
    prints it: handlers receive canonical events whatever the field map, docs/adopting.md)."""
    return json_line(
        watch_record(
            change.op,
            change.collection,
            change.key,
            change.doc,
            show_secrets=show_secrets,
            canonical=True,
        )
    )


def _key_text(key: Mapping[str, Any]) -> Text:
    """A document key: its _id alone when that is all it has, strings unquoted."""
    value: Any = key.get("_id") if list(key) == ["_id"] else dict(key)
    if isinstance(value, str):
        return Text(value, style="bold blue")
    return compact_value(value, width=60)


# --- rebuild ------------------------------------------------------------------------------------


def rebuild_summary_text(summary: Mapping[str, Any]) -> Text:
    """The end of `evstream rebuild` for a person (from RebuildReport.as_dict())."""
    mode = summary["mode"]
    name = summary.get("projection", "sessions")
    what = summary.get("collection", "sessions")
    if summary.get("partition"):
        parts = str(summary["partition"]).split("/")
        name = f"{name} part {parts[0]} of {parts[-1]}"
    skipped = (summary.get("skipped") or {}).get("total", 0)
    # A keyed projection counts keys (docs/projections.md, "Keyed projections").
    unit = ("key", "keys") if "keys" in summary else ("stream", "streams")
    if summary["dry_run"]:
        fields: dict[Any, Any] = {
            unit: summary[unit[1]],
            ("event", "events"): summary["events"],
            "to create": summary["created"],
            "to update": summary["updated"],
            "to remove": summary["removed"],
            "unchanged": summary["unchanged"],
        }
        if skipped:
            fields["skipped"] = skipped
        for upcaster, n in (summary.get("upcasted") or {}).items():
            fields[f"to upcast by {upcaster}"] = n
        return summary_text(f"Dry run of {name} ({mode}), nothing written", fields)
    fields = (
        {("event read", "events read"): summary["events"], "new": summary["applied"]}
        if mode == "incremental"
        else {("event", "events"): summary["events"]}
    )
    fields[unit] = summary[unit[1]]
    if summary.get("without_key"):
        fields["without the key"] = summary["without_key"]
    one = what[:-1] if what.endswith("s") else what
    fields[(f"{one} written", f"{what} written")] = summary["written"]
    fields["removed"] = summary["removed"]
    if summary["superseded"]:
        fields["already newer"] = summary["superseded"]
    if skipped:
        fields["skipped"] = skipped
    for upcaster, n in (summary.get("upcasted") or {}).items():
        fields[f"upcast by {upcaster}"] = n
    fields["events/s"] = round(summary["events_per_second"])
    fields["s"] = float(summary["seconds"])
    return summary_text(f"Rebuilt {name} ({mode})", fields)


def follow_summary_text(summary: Mapping[str, Any]) -> Text:
    """The end of `evstream rebuild NAME --follow` (from FollowReport.as_dict())."""
    live = summary["live"]
    fields: dict[str, Any] = {
        f"caught up ({summary['caught_up']['mode']})": summary["caught_up"]["applied"],
        ("live event", "live events"): live["events"],
        "applied": live["applied"],
        f"{summary.get('collection', 'documents')} written": live["written"],
    }
    if live["skipped"]["total"]:
        fields["skipped"] = live["skipped"]["total"]
    return summary_text(f"Followed {summary.get('projection', 'sessions')}", fields)


# --- status --------------------------------------------------------------------------------------

BLOCKS = " ▁▂▃▄▅▆▇█"
TOP_TYPES = 12


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def human_duration(seconds: float) -> str:
    """3725 → '1 h'; 90 → '1 min'; 5 → '5 s'; 200000 → '2 days'."""
    seconds = abs(seconds)
    for size, unit in ((86400 * 365, "year"), (86400, "day"), (3600, "h"), (60, "min")):
        if seconds >= size:
            n = int(seconds // size)
            plural = "s" if n != 1 and unit in ("year", "day") else ""
            return f"{n} {unit}{plural}"
    return f"{int(seconds)} s"


def human_age(moment: Any, now: datetime) -> str:
    """How long ago a moment was: 'just now', '12 s ago', '5 min ago', 'in 3 min'."""
    if not isinstance(moment, datetime):
        return "never"
    delta = (_as_utc(now) - _as_utc(moment)).total_seconds()
    if abs(delta) < 2:
        return "just now"
    return f"{human_duration(delta)} ago" if delta > 0 else f"in {human_duration(delta)}"


def wall_time(moment: Any, tz: Any = None) -> str:
    """A BSON date as local (or `tz`) wall-clock time, YYYY-MM-DD HH:MM:SS."""
    if not isinstance(moment, datetime):
        return "—"
    return _as_utc(moment).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def column_rows(counts: list[int], height: int = 1) -> list[str]:
    """A column chart of counts in block characters, `height` rows, top row first.

    Height 1 is a sparkline. Any non-zero count shows at least a sliver; zero shows nothing.
    """
    import math

    peak = max(counts, default=0)
    eighths = [
        0 if n <= 0 or peak <= 0 else max(1, math.ceil(n / peak * height * 8)) for n in counts
    ]
    rows = []
    for level in range(height - 1, -1, -1):
        rows.append("".join(BLOCKS[min(max(e - level * 8, 0), 8)] for e in eighths))
    return rows


def sparkline(counts: list[int]) -> str:
    """One line of block characters, one per count."""
    return column_rows(counts, 1)[0]


def _tick_format(start: datetime, end: datetime, size_seconds: float) -> str:
    from datetime import timedelta

    if size_seconds >= 86400:
        return "%Y-%m-%d"
    if start.date() != (end - timedelta(microseconds=1)).date():
        return "%m-%d %H:%M"  # the window crosses midnight: say which day
    return "%H:%M:%S" if size_seconds < 60 else "%H:%M"


def activity_chart(activity: Mapping[str, Any] | None, *, height: int = 3, tz: Any = None) -> Text:
    """Events per time bucket as a small column chart with its time axis and peak."""
    if not activity or not activity.get("counts"):
        return Text("no events yet", style="dim")
    counts = [int(n) for n in activity["counts"]]
    start, end = _as_utc(activity["start"]), _as_utc(activity["end"])
    size = float(activity["bucket_seconds"])
    peak = max(counts)
    notes = [
        f"peak {peak:,}",
        f"per {human_duration(size)}",
        f"{sum(counts):,} in all",
    ]
    text = Text(no_wrap=True)
    for i, row in enumerate(column_rows(counts, height)):
        text.append(row, style="cyan")
        if i < len(notes):
            text.append(f"  {notes[i]}", style="dim")
        text.append("\n")
    text.append("─" * len(counts), style="dim")
    text.append("\n")
    start, end = start.astimezone(tz), end.astimezone(tz)
    fmt = _tick_format(start, end, size)
    left, right = start.strftime(fmt), end.strftime(fmt)
    gap = max(len(counts) - len(left) - len(right), 1)
    text.append(f"{left}{' ' * gap}{right}", style="dim")
    return text


def _server_lines(server: Mapping[str, Any], now: datetime) -> Text:
    text = Text()
    if server.get("kind") == "embedded":
        text.append("embedded dev store", style="bold")
        text.append(f" · nx-27017 {server.get('version') or ''}".rstrip())
        if server.get("pid"):
            text.append(f" · pid {server['pid']}")
    else:
        version = server.get("version")
        text.append(f"{server.get('product', 'MongoDB')} {version or ''}".rstrip(), style="bold")
        text.append(f" · {server.get('topology', 'unknown topology')}")
        if server.get("atlas"):
            text.append(" · Atlas")
    if server.get("uptime_seconds") is not None:
        text.append(f" · up {human_duration(server['uptime_seconds'])}")
    text.append("\n")
    text.append(str(server.get("uri", "")), style="blue")
    if server.get("kind") == "embedded":
        text.append("\n")
        size = human_bytes(server.get("data_bytes") or 0)
        text.append(f"data in {server.get('data_dir')} ({size})")
    return text


def _counts_line(status: Mapping[str, Any]) -> Text:
    counts = status.get("counts") or {}
    text = Text()
    events = counts.get("events") or 0
    approx = "~" if counts.get("estimated") else ""
    if not events:
        text.append("none yet", style="yellow")
        text.append(" · try `evstream seed` or `evstream publish`", style="dim")
        return text
    text.append(f"{approx}{events:,}", style="bold cyan")
    text.append(f" event{'s' * (events != 1)}")
    if counts.get("streams") is not None:
        text.append(" in ")
        text.append(f"{counts['streams']:,}", style="bold cyan")
        text.append(f" stream{'s' * (counts['streams'] != 1)}")
    sessions = counts.get("sessions")
    if sessions is not None:
        text.append(" · ")
        text.append(f"{approx}{sessions:,}", style="bold cyan")
        text.append(f" session{'s' * (sessions != 1)}")
    if counts.get("estimated"):
        text.append(" (estimated from collection metadata)", style="dim")
    return text


def _edge_line(doc: Mapping[str, Any] | None, now: datetime, tz: Any) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if not doc:
        return text.append("—", style="dim")
    text.append(wall_time(doc.get("ts"), tz))
    text.append(f" ({human_age(doc.get('ts'), now)})", style="dim")
    text.append("  ")
    text.append(str(doc.get("type", "?")), style="bold")
    text.append(" ")
    text.append(str(doc.get("stream", "?")), style="bold blue")
    text.append(f"@{doc.get('version', '?')}", style="blue")
    return text


def _lag_text(lag: Any) -> Text:
    if isinstance(lag, bool) or lag is None:
        return Text("lag unknown", style="dim")
    if isinstance(lag, (int, float)):
        if lag <= 0:
            return Text("up to date", style="green")
        return Text(f"{lag:,} event{'s' * (lag != 1)} behind the log", style="yellow")
    return Text(str(lag))


def _projection_line(projection: Mapping[str, Any] | None, now: datetime) -> Text:
    if not projection or not projection.get("available"):
        error = (projection or {}).get("error", "not reported")
        return Text(f"unknown ({error})", style="dim")
    if not projection.get("last_run_at"):
        text = Text("never rebuilt", style="yellow")
        return text.append(" · run `evstream rebuild-sessions`", style="dim")
    text = Text(f"rebuilt {human_age(projection['last_run_at'], now)}")
    if projection.get("mode"):
        text.append(f" ({projection['mode']})", style="dim")
    text.append(" · ")
    text.append_text(_lag_text(projection.get("lag")))
    return text


def projections_table(rows: list[Mapping[str, Any]], now: datetime) -> Any:
    """Each projection (and part): its collection, fold version, last run and lag."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False)
    for column in ("projection", "collection", "version", "last run", "lag"):
        table.add_column(column, style="bold" if column == "projection" else None)
    for row in rows:
        last = row.get("last_run_at")
        when = human_age(last, now) if last else "never"
        mode = f" ({row['mode']})" if row.get("mode") else ""
        table.add_row(
            str(row.get("checkpoint") or row.get("name")),
            str(row.get("collection") or ""),
            "" if row.get("version") is None else f"v{row['version']}",
            f"{when}{mode}",
            _lag_text(row.get("lag")),
        )
    return table


def types_table(types: list[Mapping[str, Any]], *, limit: int = TOP_TYPES) -> Any:
    """Events by type: count, share and a bar, most frequent first."""
    from rich.table import Table

    total = sum(int(row["events"]) for row in types) or 1
    peak = max((int(row["events"]) for row in types), default=1) or 1
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False)
    table.add_column("type", style="bold", overflow="ellipsis", no_wrap=True, max_width=32)
    table.add_column("events", justify="right", style="cyan")
    table.add_column("share", justify="right")
    table.add_column("", style="cyan", no_wrap=True)
    for row in types[:limit]:
        n = int(row["events"])
        bar = "█" * max(1, round(n / peak * 20)) if n else ""
        table.add_row(str(row["type"]), f"{n:,}", f"{n / total:.1%}", bar)
    rest = types[limit:]
    if rest:
        n = sum(int(row["events"]) for row in rest)
        table.add_row(
            Text(f"… {len(rest):,} more types", style="dim"), f"{n:,}", f"{n / total:.1%}", ""
        )
    return table


def _behind_text(behind: Any) -> Text:
    if isinstance(behind, bool) or behind is None:
        return Text("—", style="dim")  # not counted (collections other than the log)
    if isinstance(behind, (int, float)):
        if behind <= 0:
            return Text("caught up", style="green")
        return Text(f"{behind:,} event{'s' * (behind != 1)}", style="yellow")
    return Text(str(behind))


def checkpoints_table(items: list[Mapping[str, Any]], now: datetime, *, tz: Any = None) -> Any:
    """Saved watch checkpoints: name, collection, when saved, position and how far behind."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False)
    table.add_column("name", style="bold", overflow="ellipsis", no_wrap=True, max_width=24)
    table.add_column("collection", overflow="ellipsis", no_wrap=True, max_width=16)
    table.add_column("saved", no_wrap=True)
    table.add_column("position", no_wrap=True)
    table.add_column("behind", justify="right", no_wrap=True)
    for item in items:
        table.add_row(
            str(item.get("name", "?")),
            str(item.get("collection", "events")),
            human_age(item.get("updated_at"), now),
            wall_time(item.get("position_ts"), tz),
            _behind_text(item.get("behind")),
        )
    return table


class Fields:
    """Labelled lines ("Label   value"), continuation lines indented under the value.

    Built as plain Text rather than a table, so that a long path or URI is never folded into
    pieces: on a terminal it wraps as the terminal wraps it and stays whole when copied.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, Text]] = []

    def add_row(self, label: str, value: Text | str) -> None:
        """One field; a value with newlines continues under itself."""
        self.rows.append((label, value if isinstance(value, Text) else Text(value)))

    def text(self) -> Text:
        """All fields, labels padded to the longest one."""
        width = max((len(label) for label, _ in self.rows), default=0) + 2
        out = Text()
        for i, (label, value) in enumerate(self.rows):
            if i:
                out.append("\n")
            out.append(label.ljust(width), style="bold")
            for j, line in enumerate(value.split("\n", allow_blank=True)):
                if j:
                    out.append("\n" + " " * width)
                out.append_text(line)
        return out


def status_view(status: Mapping[str, Any], *, tz: Any = None) -> Any:
    """`evstream status` for a person: a rich renderable built from `overview.gather`'s object."""
    from rich.console import Group
    from rich.padding import Padding

    now = _as_utc(status.get("now") or datetime.now(timezone.utc))
    grid = Fields()
    grid.add_row("Server", _server_lines(status.get("server") or {}, now))
    grid.add_row("Database", Text(str(status.get("database", "?")), style="bold"))
    if status.get("log"):
        grid.add_row("Log", Text(str(status["log"]), style="") + Text(" · [log] map", "dim"))
    grid.add_row("Events", _counts_line(status))
    not_events = status.get("not_events")
    if not_events:
        total = int(not_events.get("total", 0))
        line = Text(f"{total:,} document{'s' * (total != 1)} in events are not events", "yellow")
        line.append(" (not counted above) · `evstream check` lists them", style="dim")
        grid.add_row("Not events", line)
    if status.get("oldest"):
        grid.add_row("Oldest", _edge_line(status.get("oldest"), now, tz))
        grid.add_row("Newest", _edge_line(status.get("newest"), now, tz))
    if status.get("log_starts"):
        grid.add_row("Archived", log_starts_text(status["log_starts"]))
    grid.add_row("Sessions", _projection_line(status.get("projection"), now))
    checkpoints = status.get("checkpoints") or {}
    items = checkpoints.get("items") or []
    if not checkpoints.get("available"):
        summary = Text(f"unknown ({checkpoints.get('error', 'not reported')})", style="dim")
    elif not items:
        summary = Text("none saved", style="dim")
        summary.append(" · `evstream watch --checkpoint NAME` saves one", style="dim")
    else:
        summary = Text(f"{len(items)} saved", style="")
    grid.add_row("Checkpoints", summary)
    dead = status.get("dead_letters") or {}
    if dead:
        line = Text()
        for i, (name, n) in enumerate(sorted(dead.items())):
            line.append(", " if i else "")
            line.append(f"{n:,}", style="bold red")
            line.append(f" from {name!r}")
        line.append(" · in evstream_dead_letters", style="dim")
        grid.add_row("Dead letters", line)
    if status.get("activity"):
        grid.add_row("Activity", activity_chart(status["activity"], tz=tz))
    parts: list[Any] = [grid.text()]
    types = status.get("types")
    if types:
        parts += [
            Text(""),
            Text("Events by type", style="bold"),
            Padding(types_table(types), (0, 0, 0, 2), expand=False),
        ]
    projections = (status.get("projections") or {}).get("items") or []
    if projections:
        parts += [
            Text(""),
            Text("Projections", style="bold"),
            Padding(projections_table(projections, now), (0, 0, 0, 2), expand=False),
        ]
    if items:
        parts += [
            Text(""),
            Text("Checkpoints", style="bold"),
            Padding(checkpoints_table(items, now, tz=tz), (0, 0, 0, 2), expand=False),
        ]
    return Group(*parts)


def server_view(info: Mapping[str, Any], *, now: datetime | None = None) -> Any:
    """`evstream server status` (and `start`) for a person: whether it runs, where, its data
    and its log."""
    now = _as_utc(now or datetime.now(timezone.utc))
    grid = Fields()
    state = Text()
    if info.get("running"):
        if "started" in info:
            state.append("started" if info["started"] else "already running", style="bold green")
        else:
            state.append("running", style="bold green")
        if info.get("version"):
            state.append(f" · nx-27017 {info['version']}")
        state.append(f" · pid {info.get('pid')}")
        started_at = info.get("started_at")
        if isinstance(started_at, datetime) and not info.get("started"):
            up = (now - _as_utc(started_at)).total_seconds()
            state.append(f" · up {human_duration(up)}")
        grid.add_row("Status", state)
        grid.add_row("URI", Text(str(info.get("uri")), style="blue"))
        if info.get("socket"):
            grid.add_row("TCP", _tcp_text(info))
    else:
        state.append("not running", style="bold yellow")
        state.append(" · starts by itself when a command needs it", style="dim")
        grid.add_row("Status", state)
        if info.get("stale_pid"):
            note = f"a stale record of pid {info['stale_pid']} is left; the next start replaces it"
            grid.add_row("", Text(note, style="dim"))
        if info.get("socket_path"):
            kept = Text(str(info["socket_path"]))
            if info.get("kept_port"):
                tcp = "on" if info.get("kept_tcp") else "off"
                kept.append(f" · TCP port {info['kept_port']} ({tcp})", style="dim")
            grid.add_row("Address", kept.append(" · kept for the next start", style="dim"))
    data = Text(str(info.get("data_dir")))
    if "data_bytes" in info:
        data.append(f" · {human_bytes(info.get('data_bytes') or 0)}", style="cyan")
    databases = info.get("databases") or []
    width = max((len(str(db["name"])) for db in databases), default=0)
    for db in databases:
        data.append(f"\n  {db['name']:<{width}}  ", style="dim")
        data.append(f"{human_bytes(db['bytes']):>9}", style="cyan")
    grid.add_row("Data", data)
    log = Text(str(info.get("log_file")))
    if "log_bytes" in info:
        log.append(f" · {human_bytes(info.get('log_bytes') or 0)}", style="cyan")
    grid.add_row("Log", log)
    return grid.text()


def _tcp_text(info: Mapping[str, Any]) -> Text:
    if info.get("tcp_uri"):
        return Text(str(info["tcp_uri"]), style="blue")
    text = Text("off", style="dim")
    hint = " · `evstream server restart --tcp` for clients that need a port"
    return text.append(hint, style="dim")


# --- bench ---------------------------------------------------------------------------------------


def bench_table(results: Any) -> Any:
    """`evstream bench` figures: a table of times and ratios, then each baseline and its notes."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title="evstream against raw pymongo, same server, same run", title_justify="left")
    table.add_column("workload", style="bold")
    table.add_column("events", justify="right")
    table.add_column("evstream s", justify="right")
    table.add_column("raw s", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("events/s", justify="right")
    table.add_column("CPU µs/event", justify="right")
    table.add_column("raw µs/event", justify="right")
    table.add_column("CPU ratio", justify="right")
    lines = []
    for r in results:
        ratio_style = "green" if r.ratio <= 1.2 else "yellow"
        cpu = r.cpu_ratio
        table.add_row(
            r.workload,
            f"{r.events:,}",
            f"{r.evstream_seconds:.2f}",
            f"{r.raw_seconds:.2f}",
            Text(f"{r.ratio:.2f}x", style=ratio_style),
            f"{r.events_per_second:,.0f}",
            "—" if cpu is None else f"{r.cpu_per_event('evstream'):.1f}",
            "—" if cpu is None else f"{r.cpu_per_event('raw'):.1f}",
            Text("—") if cpu is None else Text(f"{cpu:.2f}x", "green" if cpu <= 1.5 else "yellow"),
        )
        notes = bench_notes(r.extra)
        line = Text.assemble((f"{r.workload}: ", "bold"), f"raw is {r.raw_label}")
        if notes:
            line.append(f"; {notes}")
        lines.append(line)
    return Group(table, *lines)


def bench_notes(extra: Mapping[str, Any]) -> str:
    """The workload's own figures: watch latency against raw, rebuild's streams, rounds."""
    notes = []
    if "p50_ms" in extra:
        notes.append(f"p50 {extra['p50_ms']:.2f} ms (raw {extra['raw_p50_ms']:.2f})")
        notes.append(f"p99 {extra['p99_ms']:.2f} ms (raw {extra['raw_p99_ms']:.2f})")
    if extra.get("replay_cpu_ratio") is not None:
        notes.append(
            f"reading the log (--from start --no-follow): CPU "
            f"{extra['replay_cpu_us_per_event']:.1f} µs/event "
            f"(raw find().sort('ts') {extra['raw_replay_cpu_us_per_event']:.1f}), "
            f"{extra['replay_cpu_ratio']:.2f}x"
        )
    if "streams" in extra:
        notes.append(f"{extra['streams']:,} streams")
    if "batch1_events_per_second" in extra:
        notes.append(
            f"--batch {extra['batch']}; --batch 1 runs "
            f"{extra['batch1_events_per_second']:,.0f} events/s (a handler process per change)"
        )
    if "rounds" in extra:
        notes.append(f"median of {extra['rounds']} rounds")
    return "; ".join(notes)


# --- check ---------------------------------------------------------------------------------------


def _sample_text(sample: Any) -> str:
    """One example of a finding, short: an _id, a stream@version, an index name."""
    if isinstance(sample, Mapping):
        stream = sample.get("stream")
        if "next" in sample:
            after, following = sample["after"], sample["next"]
            missing = f"{after + 1}" if following == after + 2 else f"{after + 1}-{following - 1}"
            return f"{stream} v{missing}"
        return f"{stream}@{sample.get('version')}"
    if isinstance(sample, str):
        return sample
    return str(sample)


def check_findings_table(findings: list[Mapping[str, Any]]) -> Any:
    """The findings of `evstream check`, numbered: kind, count, what is wrong, examples."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False)
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("finding", style="bold yellow", no_wrap=True)
    table.add_column("count", justify="right", style="cyan", no_wrap=True)
    table.add_column("what is wrong", ratio=3)
    table.add_column("examples", style="blue", overflow="fold", ratio=1)
    for number, finding in enumerate(findings, 1):
        samples = finding.get("samples") or []
        table.add_row(
            str(number),
            str(finding.get("kind")),
            f"{int(finding.get('count') or 0):,}",
            str(finding.get("problem")),
            ", ".join(_sample_text(s) for s in samples[:3]) + (" …" if len(samples) > 3 else ""),
        )
    return table


def check_fixes(findings: list[Mapping[str, Any]]) -> Text:
    """Each finding's fix on lines of its own, numbered as in the table, never folded, so a
    mongosh line copies whole."""
    text = Text()
    for number, finding in enumerate(findings, 1):
        if number > 1:
            text.append("\n")
        text.append(f"{number:>2}. ", style="dim")
        text.append(str(finding.get("fix")))
    return text


def _id_text(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if type(value).__name__ == "ObjectId":
        return f'ObjectId("{value}")'
    return str(value)


def check_view(report: Mapping[str, Any]) -> Any:
    """`evstream check` for a person: a summary line, then the findings table (if any)."""
    from rich.console import Group

    head = Text()
    if not report.get("log_exists", True):
        head.append(f"database {report.get('database')!r} has no events collection yet", "dim")
    else:
        head.append("Checked ", style="bold")
        head.append(f"{int(report.get('documents') or 0):,}", style="cyan")
        head.append(" documents: ")
        head.append(f"{int(report.get('events') or 0):,}", style="cyan")
        head.append(" events in ")
        head.append(f"{int(report.get('streams') or 0):,}", style="cyan")
        head.append(f" streams ({float(report.get('seconds') or 0):.1f} s)")
    if report.get("log_starts"):
        head.append("\n")
        head.append_text(log_starts_text(report["log_starts"]))
    mapped = report.get("map")
    if mapped:
        # A log another application shaped: how many documents its map fits, and the first
        # ones it does not (docs/adopting.md).
        head.append("\nMap ", style="bold")
        head.append(str(mapped.get("log")))
        fits, total = int(mapped.get("fits") or 0), int(mapped.get("documents") or 0)
        head.append(" fits ")
        head.append(f"{fits:,}", style="cyan" if fits == total else "bold yellow")
        head.append(f" of {total:,} documents")
        misfits = mapped.get("misfits") or []
        if misfits:
            head.append("; first that do not: ")
            head.append(", ".join(_id_text(i) for i in misfits), style="yellow")
    findings = report.get("findings") or []
    if not findings:
        head.append(" · ")
        head.append("healthy", style="bold green")
        return head
    head.append(" · ")
    head.append(f"{len(findings)} finding{'s' * (len(findings) != 1)}", style="bold yellow")
    return Group(
        head,
        Text(""),
        check_findings_table(findings),
        Text(""),
        Text("How to fix them", style="bold"),
        check_fixes(findings),
    )


def config_view(report: Mapping[str, Any]) -> Any:
    """`evstream config` for a person: each setting, its value and where it came from."""
    grid = Fields()
    for key, row in report["settings"].items():
        value = row["value"]
        if value is None or value == [] or value == {}:
            shown = Text("(none)", style="dim")
        elif isinstance(value, Mapping):
            shown = Text(", ".join(f"{k} = {v!r}" for k, v in value.items()))
        elif isinstance(value, list):
            shown = Text(", ".join(str(v) for v in value))
        else:
            shown = Text(str(value), style="blue" if key == "uri" else "")
        shown.append(f"  ← {row['source']}", style="dim")
        grid.add_row(key, shown)
    files = Fields()
    files.add_row("project file", report.get("project_file") or Text("(none found)", style="dim"))
    user = Text(str(report.get("user_file")))
    if not report.get("user_file_exists"):
        user.append(" (absent)", style="dim")
    elif report.get("contexts"):
        user.append(f" · contexts: {', '.join(report['contexts'])}", style="dim")
    files.add_row("user file", user)
    return Text("\n").join([grid.text(), Text(""), files.text()])


# --- the log's life: archive, erase, redact (docs/lifecycle.md) ------------------------------


def _names(names: Any, limit: int = 8) -> str:
    items = [str(n) for n in names or []]
    shown = ", ".join(items[:limit])
    return shown + (f" … (+{len(items) - limit})" if len(items) > limit else "")


def redact_view(report: Mapping[str, Any]) -> Any:
    """`evstream redact` for a person: what changed, where, and what to rebuild."""
    title = "Would redact" if report.get("dry_run") else "Redacted"
    lines = [
        summary_text(
            title,
            {
                ("event", "events"): int(report.get("changed") or 0),
                ("field", "fields"): int(report.get("fields") or 0),
                "scanned": int(report.get("scanned") or 0),
            },
        )
    ]
    paths = report.get("paths") or {}
    if paths:
        lines.append(Text("  " + ", ".join(f"{p} ×{n:,}" for p, n in paths.items()), "dim"))
    if report.get("rebuild"):
        lines.append(
            Text(
                "  may hold the old values; rebuild them in full: "
                + _names(report["rebuild"])
                + " (evstream rebuild NAME)"
            )
        )
    if report.get("archives"):
        lines.append(
            Text(
                "  not redacted: the events archives moved out of the log, in "
                + ", ".join(report["archives"])
                + ", and the projection snapshots folded from them (docs/lifecycle.md)",
                "yellow",
            )
        )
    return Text("\n").join(lines)


def erase_view(report: Mapping[str, Any]) -> Any:
    """`evstream erase` for a person: per stream, what went from which collection."""
    lines: list[Text] = []
    for item in report.get("streams") or []:
        removed = item.get("removed") or {}
        lines.append(
            summary_text(
                f"Erased {item.get('stream')}",
                {name: int(n) for name, n in removed.items()} or {"nothing left": ""},
            )
        )
        refolded = item.get("refolded") or {}
        if refolded:
            lines.append(
                Text(
                    "  keyed projections' keys refolded without it: "
                    + ", ".join(f"{name} {int(n)}" for name, n in refolded.items()),
                    "dim",
                )
            )
        files = item.get("archive_files") or []
        if files:
            lines.append(
                Text(
                    "  archive files that may still hold it (evstream cannot erase files): "
                    + _names(files),
                    "yellow",
                )
            )
    return Text("\n").join(lines)


def archive_view(report: Mapping[str, Any]) -> Any:
    """`evstream archive` for a person: what moved (or would), and where to."""
    title = "Would archive" if report.get("dry_run") else "Archived"
    fields: dict[Any, Any] = {
        ("event", "events"): int(report.get("events") or 0),
        ("stream", "streams"): int(report.get("streams") or 0),
        "size": human_bytes(float(report.get("bytes") or 0)),
    }
    if not report.get("dry_run"):
        fields["deleted"] = int(report.get("deleted") or 0)
    lines = [summary_text(title, fields)]
    if report.get("path"):
        lines.append(Text(f"  to {report['path']}", "dim"))
    if report.get("resumed"):
        lines.append(Text("  finished an interrupted run", "dim"))
    if report.get("held_back"):
        lines.append(
            Text(
                f"  {int(report['held_back']):,} older events stay: an earlier version of their "
                "stream is newer than --before (a stream is archived from its start, in order)",
                "dim",
            )
        )
    if report.get("snapshots"):
        lines.append(Text("  projections kept at the edge: " + _names(report["snapshots"]), "dim"))
    return Text("\n").join(lines)


def log_starts_text(starts: Mapping[str, Any]) -> Text:
    """Where the log starts after archives: 'the log starts at 2024-01-01 … (3 archives …)'."""
    text = Text()
    before = starts.get("archived_before")
    if before is not None:
        text.append("the log starts at ")
        text.append(wall_time(before), style="cyan")
        n = int(starts.get("archives") or 0)
        text.append(
            f" ({int(starts.get('archived_events') or 0):,} older events in "
            f"{n} archive{'s' * (n != 1)})",
            style="dim",
        )
    for item in starts.get("unfinished") or []:
        text.append(f"\nunfinished archive to {item['path']}: {item['fix']}", style="yellow")
    return text
