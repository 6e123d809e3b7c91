"""Shared pieces of the benchmark scripts: a throwaway nx-27017 server, timing, peak RSS."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from evstream.embedded import free_port, port_answers, spawn_server, terminate, uri_for


@contextlib.contextmanager
def server(uri: str | None) -> Iterator[str]:
    """The given URI, or a fresh nx-27017 server in a temp dir for the length of the run."""
    if uri:
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="evstream-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        proc = spawn_server(root / "data", port, root / "pid", root / "log")
        deadline = time.monotonic() + 20
        while not port_answers(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("nx-27017 did not start")
            time.sleep(0.05)
        try:
            yield uri_for(port)
        finally:
            terminate(proc.pid)


def timed(fn: Callable[[], object]) -> float:
    """Seconds taken by fn()."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run_measured(
    argv: list[str], env: dict[str, str], stdin: Path | None = None
) -> tuple[float, int, str]:
    """Run a command in a fresh wrapper process: (seconds, peak RSS in KiB, stdout)."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "stdin = open(sys.argv[1], 'rb') if sys.argv[1] else None\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[2:], stdin=stdin, capture_output=True)\n"
        "s = time.perf_counter() - t\n"
        "sys.stderr.buffer.write(p.stderr)\n"
        "print(json.dumps([s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode,"
        " p.stdout.decode()]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, str(stdin or ""), *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, rss, code, stdout = json.loads(out.stdout)
    if code != 0:
        raise SystemExit(f"{argv} failed ({code}): {out.stderr[-2000:]}")
    return seconds, rss, stdout


def self_peak_rss_kib() -> int:
    """This process's peak RSS so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
