"""`evstream top` on a terminal, and the Prometheus text of `status -o prometheus`
(docs/operating.md).

Pure functions turn a monitor snapshot (evstream/monitor.py) into a rich renderable or into
text; `run_live` only swaps the next frame in, once per interval, and reads the `q` key.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import IO, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from evstream.output import column_rows, human_age, human_duration, wall_time

STATE_STYLES = {
    "dead": "bold red",
    "stalled": "red",
    "behind": "yellow",
    "unknown": "dim",
    "live": "green",
    "idle": "cyan",
    "stopped": "dim",
}
SPARK_WIDTH = 20


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """The last `width` values as block characters (the highest is a full block; zero is a
    space), padded on the left so that the newest is always at the right edge."""
    points = list(values)[-width:] if width > 0 else []
    line = column_rows(points, 1)[0] if points else ""
    return line.rjust(width)


def rate_text(rate: Any) -> str:
    """Events per second as shown: '—' unknown, '0', '0.4', '12', '1,234'."""
    if not isinstance(rate, (int, float)):
        return "—"
    if rate == 0:
        return "0"
    if rate < 10:
        return f"{rate:.1f}"
    return f"{rate:,.0f}"


def lag_text(row: Mapping[str, Any]) -> Text:
    """Lag in events: exact, or `~N` when estimated; '—' when it cannot be known."""
    lag = row.get("lag_events")
    if lag is None:
        return Text("—", style="dim")
    text = f"~{lag:,}" if row.get("lag_estimated") else f"{lag:,}"
    return Text(text, style="yellow" if lag else "")


def lag_time_text(seconds: Any) -> Text:
    """Lag in time: '0', '4 s', '3 min'."""
    if not isinstance(seconds, (int, float)):
        return Text("—", style="dim")
    if seconds <= 0:
        return Text("0")
    if seconds < 1:
        return Text("<1 s")
    return Text(human_duration(seconds), style="yellow" if seconds >= 5 else "")


def where_text(row: Mapping[str, Any], now: datetime) -> Text:
    """Host and pid, and when it was last heard of if that was a while ago."""
    if not row.get("host"):
        return Text("—", style="dim")
    text = Text(f"{row['host']}:{row.get('pid')}")
    silent = row.get("silent_seconds")
    state = row.get("state")
    if state == "stopped":
        text.append(f" stopped {human_age(row.get('seen'), now)}", style="dim")
    elif isinstance(silent, (int, float)) and silent >= (row.get("dead_after_seconds") or 30) / 3:
        text.append(f" silent {human_duration(silent)}", style="red")
    if row.get("error"):
        text.append(f" {row['error']}", style="red")
    return text


def log_line(snapshot: Mapping[str, Any]) -> Text:
    """The log: size, append rate with its sparkline, newest event's age."""
    log = snapshot.get("log") or {}
    now = snapshot.get("now") or datetime.now(timezone.utc)
    text = Text()
    text.append("log ", style="bold")
    events = log.get("events")
    prefix = "~" if log.get("events_estimated") else ""
    text.append(f"{prefix}{events:,}" if isinstance(events, int) else "—", style="cyan")
    text.append(" events · ")
    text.append(rate_text(log.get("rate")), style="cyan")
    text.append(" events/s ")
    history = log.get("rate_history") or []
    text.append(sparkline(history, 30), style="cyan")
    text.append(" · newest ")
    newest = log.get("newest") or {}
    text.append(human_age(newest.get("ts"), now) if newest else "none yet")
    return text


def title_line(snapshot: Mapping[str, Any], *, interval: float | None, tz: Any = None) -> Text:
    """What is shown, when, and how to leave."""
    text = Text()
    text.append("evstream top", style="bold")
    text.append(f" · database {snapshot.get('database')} · ")
    text.append(wall_time(snapshot.get("now"), tz))
    took = snapshot.get("refresh_seconds")
    if isinstance(took, (int, float)):
        text.append(f" · refresh {took:.2f} s", style="dim")
    if interval is not None:
        text.append(f" every {interval:g} s · q quits", style="dim")
    return text


def position_text(moment: Any, now: datetime, tz: Any = None) -> str:
    """A position's time: HH:MM:SS within a day of now, else the date."""
    if not isinstance(moment, datetime):
        return "—"
    moment = _as_utc(moment)
    shown = moment.astimezone(tz)
    if abs((_as_utc(now) - moment).total_seconds()) < 86400:
        return shown.strftime("%H:%M:%S")
    return shown.strftime("%Y-%m-%d")


# Narrower than this, the table leaves out the kind and the rate's sparkline.
WIDE = 110


def consumers_table(
    rows: list[Mapping[str, Any]], now: datetime, *, tz: Any = None, width: int | None = None
) -> Table:
    """One row per consumer and projection, in the order given (worst first)."""
    wide = width is None or width >= WIDE
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    columns = [
        ("STATE", "left"),
        ("KIND", "left"),
        ("NAME", "left"),
        ("PART", "left"),
        ("POSITION", "left"),
        ("LAG", "right"),
        ("BEHIND", "right"),
        ("RATE/s", "right"),
        ("TREND", "left"),
        ("DEAD L.", "right"),
        ("WHERE", "left"),
    ]
    if not wide:
        columns = [c for c in columns if c[0] not in ("KIND", "TREND")]
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name not in ("WHERE", "NAME"))
    for row in rows:
        state = str(row.get("state"))
        letters = int(row.get("dead_letters") or 0)
        cells: dict[str, Any] = {
            "STATE": Text(state, style=STATE_STYLES.get(state, "")),
            "KIND": str(row.get("kind")),
            "NAME": str(row.get("name")),
            "PART": str(row.get("part") or ""),
            "POSITION": position_text(row.get("position_ts"), now, tz),
            "LAG": lag_text(row),
            "BEHIND": lag_time_text(row.get("lag_seconds")),
            "RATE/s": rate_text(row.get("rate")),
            "TREND": Text(sparkline(row.get("rate_history") or [], 12), style="green"),
            "DEAD L.": Text(f"{letters:,}", style="bold red" if letters else "dim"),
            "WHERE": where_text(row, now),
        }
        table.add_row(*(cells[name] for name, _ in columns))
    return table


def top_view(
    snapshot: Mapping[str, Any],
    *,
    interval: float | None = None,
    tz: Any = None,
    width: int | None = None,
) -> Any:
    """One frame of `evstream top` (`width`: the terminal's, to leave columns out below WIDE)."""
    now = snapshot.get("now") or datetime.now(timezone.utc)
    rows = list(snapshot.get("consumers") or [])
    parts: list[Any] = [title_line(snapshot, interval=interval, tz=tz), log_line(snapshot), ""]
    if rows:
        parts.append(consumers_table(rows, now, tz=tz, width=width))
        notes = []
        if any(row.get("lag_estimated") for row in rows):
            notes.append("~ lag estimated from the log's time span (counting would scan it)")
        counts: dict[str, int] = {}
        for row in rows:
            counts[str(row.get("state"))] = counts.get(str(row.get("state")), 0) + 1
        summary = " · ".join(f"{n} {state}" for state, n in counts.items())
        parts += ["", Text(summary + ("" if not notes else " · " + notes[0]), style="dim")]
    else:
        parts.append(
            Text(
                "no consumers yet: start one with evstream watch --checkpoint NAME, "
                "or evstream rebuild NAME --follow",
                style="dim",
            )
        )
    return Group(*parts)


def consumers_check_view(report: Mapping[str, Any]) -> Any:
    """`check --consumers` for a person: what was checked, then each finding and its fix."""
    checked = list(report.get("consumers") or [])
    findings = list(report.get("findings") or [])
    head = Text()
    head.append("Checked ", style="bold")
    head.append(f"{len(checked)}", style="cyan")
    head.append(f" consumer{'s' * (len(checked) != 1)}")
    limits = report.get("thresholds") or {}
    said = []
    if limits.get("max_lag_events") is not None:
        said.append(f"lag ≤ {limits['max_lag_events']:,} events")
    if limits.get("max_lag_seconds") is not None:
        said.append(f"lag ≤ {human_duration(limits['max_lag_seconds'])}")
    said.append(f"dead letters ≤ {limits.get('max_dead_letters', 0):,}")
    stale = limits.get("stale_seconds")
    said.append(f"silent ≤ {human_duration(stale)}" if stale is not None else "not dead")
    head.append(f" ({', '.join(said)})", style="dim")
    head.append(" · ")
    if not findings:
        head.append("healthy", style="bold green")
        return head
    head.append(f"{len(findings)} finding{'s' * (len(findings) != 1)}", style="bold yellow")
    lines = Text()
    for n, finding in enumerate(findings, 1):
        lines.append(f"{n:>2}. ", style="dim")
        lines.append(str(finding.get("problem")), style=STATE_STYLES.get(finding.get("state"), ""))
        lines.append("\n    fix: ", style="dim")
        lines.append(str(finding.get("fix")))
        if n < len(findings):
            lines.append("\n")
    return Group(head, Text(""), lines)


# --- the live loop ----------------------------------------------------------------------------


@contextlib.contextmanager
def keys(stream: IO[str]) -> Iterator[Callable[[float], str | None]]:
    """Read single keys from a terminal without echo (the terminal is restored on the way
    out); yields `wait(seconds)`, the key pressed within that time or None."""
    fd = stream.fileno() if stream.isatty() else None
    saved = None
    if fd is not None:
        import termios
        import tty

        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

    def wait(seconds: float) -> str | None:
        if fd is None:
            import time

            time.sleep(max(0.0, seconds))
            return None
        ready, _, _ = select.select([fd], [], [], max(0.0, seconds))
        if not ready:
            return None
        data = os.read(fd, 32)
        return data.decode("utf-8", "replace") if data else None

    try:
        yield wait
    finally:
        if fd is not None and saved is not None:
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_live(
    console: Any,
    frames: Callable[[], Any],
    *,
    interval: float,
    clock: Callable[[], float],
    stdin: IO[str] = sys.stdin,
) -> None:
    """Show `frames()` full-screen, a new one every `interval` seconds, until `q`.

    Ctrl-C ends it too (the caller exits 0); the screen and the terminal's modes come back as
    they were either way (rich's alternate screen, termios)."""
    from rich.live import Live

    with (
        keys(stdin) as wait,
        Live(frames(), console=console, screen=True, auto_refresh=False, transient=True) as live,
    ):
        while True:
            due = clock() + interval
            while True:
                key = wait(due - clock())
                if key is not None and "q" in key.lower():
                    return
                if clock() >= due:
                    break
            live.update(frames(), refresh=True)


# --- Prometheus --------------------------------------------------------------------------------

ALIVE = ("live", "idle", "behind", "stalled")


def prometheus_text(snapshot: Mapping[str, Any]) -> str:
    """The snapshot in the Prometheus text exposition format (prometheus_client writes it)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    log = snapshot.get("log") or {}
    rows = list(snapshot.get("consumers") or [])
    now = snapshot.get("now")
    labels = ["name", "part", "kind"]

    def gauge(name: str, doc: str, unit: str = "") -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=labels, unit=unit)

    class Snapshot:
        def collect(self) -> Iterator[Any]:
            yield GaugeMetricFamily(
                "evstream_log_events", "Documents in the events collection", value=log["events"]
            )
            age = log.get("newest_age_seconds")
            if age is not None:
                yield GaugeMetricFamily(
                    "evstream_log_newest_event_age_seconds",
                    "Seconds since the newest event's ts",
                    value=age,
                )
            if log.get("rate") is not None:
                yield GaugeMetricFamily(
                    "evstream_log_append_rate",
                    "Events appended per second, between the last two looks",
                    value=log["rate"],
                )
            lag = gauge("evstream_consumer_lag_events", "Events after the consumer's position")
            estimated = gauge(
                "evstream_consumer_lag_estimated", "1 when lag_events is an estimate, else 0"
            )
            lag_s = gauge(
                "evstream_consumer_lag_seconds",
                "Seconds between the consumer's position and the newest event",
            )
            rate = gauge(
                "evstream_consumer_rate", "Events handled per second, as the consumer reported"
            )
            handled = CounterMetricFamily(
                "evstream_consumer_handled",
                "Events handled since the consumer's process started",
                labels=labels,
            )
            retries = CounterMetricFamily(
                "evstream_consumer_retries",
                "Handler runs that retried a failed batch, since the process started",
                labels=labels,
            )
            letters = gauge(
                "evstream_consumer_dead_letters", "Changes set aside in evstream_dead_letters"
            )
            up = gauge("evstream_consumer_up", "1 while the consumer shows signs of life, else 0")
            seen = gauge(
                "evstream_consumer_last_seen_timestamp_seconds",
                "When the consumer last recorded its liveness (Unix time)",
            )
            state = GaugeMetricFamily(
                "evstream_consumer_state",
                "1 for the consumer's state (dead, stalled, behind, live, idle, stopped, unknown)",
                labels=[*labels, "state"],
            )
            for row in rows:
                values = [str(row.get("name")), str(row.get("part") or ""), str(row.get("kind"))]
                if row.get("lag_events") is not None:
                    lag.add_metric(values, row["lag_events"])
                    estimated.add_metric(values, 1 if row.get("lag_estimated") else 0)
                if row.get("lag_seconds") is not None:
                    lag_s.add_metric(values, row["lag_seconds"])
                if row.get("rate") is not None:
                    rate.add_metric(values, row["rate"])
                if row.get("handled") is not None:
                    handled.add_metric(values, row["handled"])
                if row.get("retries") is not None:
                    retries.add_metric(values, row["retries"])
                letters.add_metric(values, int(row.get("dead_letters") or 0))
                up.add_metric(values, 1 if row.get("state") in ALIVE else 0)
                if isinstance(row.get("seen"), datetime):
                    seen.add_metric(values, _as_utc(row["seen"]).timestamp())
                state.add_metric([*values, str(row.get("state"))], 1)
            yield from (lag, estimated, lag_s, rate, handled, retries, letters, up, seen, state)
            if isinstance(now, datetime):
                yield GaugeMetricFamily(
                    "evstream_snapshot_timestamp_seconds",
                    "When these figures were taken (Unix time)",
                    value=_as_utc(now).timestamp(),
                )

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())  # type: ignore[arg-type]
    return generate_latest(registry).decode("utf-8")


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
