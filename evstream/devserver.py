"""What `evstream server status|logs` shows about the embedded dev store: where it runs, where
its data lives and how big it is, and its log (the last lines, or followed as it grows).

Stdlib only, so that the `server` commands never load pymongo.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evstream.embedded import DevStore, ServerRecord


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def server_info(record: ServerRecord, started: bool, db: str | None = None) -> dict[str, Any]:
    """What `server start` and `server restart` show: where the store runs, its URIs naming
    the configured database (mongosh and mongoose would use `test` otherwise)."""
    return {
        "running": True,
        "started": started,
        "uri": record.client_uri(db),
        "tcp_uri": record.tcp_client_uri(db),
        "db": db,
        "socket": record.socket,
        "pid": record.pid,
        "port": record.port,
        "data_dir": record.data_dir,
        "log_file": record.log_file,
    }


def start(
    home: Path, tcp: bool | None, db: str | None = None
) -> tuple[dict[str, Any], list[str], list[str]]:
    """`server start`: start the store unless it runs, adding TCP to one running without it
    when `tcp` is True; (what to show, notices, warnings)."""
    from evstream.errors import InvalidInput

    dev = DevStore(home)
    saved = dev.read_record()
    current = dev.running()
    if current is not None and tcp is False and current.port:
        raise InvalidInput(
            "the embedded dev store already runs with TCP; closing it would cut off the "
            "clients connected there",
            hint="evstream server restart --no-tcp",
        )
    record, started = dev.start(tcp=tcp)
    notes = list(dev.notes.lines)
    if saved is not None and started and current is None:
        notes.append(f"replaced a stale record of pid {saved.pid}, which had stopped")
    return server_info(record, started, db), notes, list(dev.notes.warnings)


def details(home: Path, db: str | None = None) -> dict[str, Any]:
    """Whether the embedded dev store runs, where (URIs naming `db`), and where and how big
    its data and log are."""
    dev = DevStore(home)
    record = dev.running()
    info: dict[str, Any] = {
        "running": record is not None,
        "pid": record.pid if record else None,
        "port": record.port if record else None,
        "uri": record.client_uri(db) if record else None,
        "tcp_uri": record.tcp_client_uri(db) if record else None,
        "socket": record.socket if record else None,
        "kept_port": dev.address().port,
        "kept_tcp": dev.address().tcp,
        "socket_path": str(dev.socket_path),
        "started_at": (
            datetime.fromtimestamp(record.started_at, tz=timezone.utc) if record else None
        ),
        "home": str(dev.home),
        "data_dir": str(dev.data_dir),
        "data_bytes": dev.data_size(),
        "databases": database_files(dev.data_dir),
        "log_file": str(dev.log_file),
        "log_bytes": file_size(dev.log_file),
        "version": package_version("nx-27017"),
    }
    saved = dev.read_record()
    if record is None and saved is not None:
        # A record whose process is gone: the next start replaces it.
        info["stale_pid"] = saved.pid
    return info


def database_files(data_dir: Path) -> list[dict[str, Any]]:
    """The databases in an nx-27017 data directory (one SQLite file each) with their sizes."""
    sizes: dict[str, int] = {}
    if data_dir.is_dir():
        for path in data_dir.iterdir():
            if not path.is_file():
                continue
            # SQLite keeps `name.db-wal` and `name.db-shm` beside `name.db`.
            base, dot, _ = path.name.partition(".db")
            if base and dot:
                sizes[base] = sizes.get(base, 0) + file_size(path)
    return [{"name": name, "bytes": sizes[name]} for name in sorted(sizes)]


def file_size(path: Path) -> int:
    """Bytes in a file; 0 when it does not exist."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- the log -------------------------------------------------------------------------------------


def tail_lines(path: Path, count: int, *, block: int = 8192) -> tuple[list[str], int]:
    """The last `count` lines of a text file, read from its end (the log may be large), and the
    offset they end at, from which `follow_lines` continues."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return [], 0
    with handle:
        handle.seek(0, os.SEEK_END)
        end = position = handle.tell()
        data = b""
        while count > 0 and position > 0 and data.count(b"\n") <= count:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    if count <= 0:
        return [], end
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-count:], end


def follow_lines(
    path: Path,
    *,
    offset: int | None = None,
    poll: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Lines written to a file after `offset` (default: its current end), as `tail -F` shows them.

    A file that is replaced or truncated (the server restarted with a fresh log) is read again
    from its start; one that does not exist yet is waited for.
    """
    handle: Any = None
    inode = None
    pending = b""
    first = True
    try:
        while not stop():
            if handle is None:
                try:
                    handle = open(path, "rb")  # noqa: SIM115
                except FileNotFoundError:
                    first = False
                    sleep(poll)
                    continue
                inode = os.fstat(handle.fileno()).st_ino
                if first:
                    size = os.fstat(handle.fileno()).st_size
                    handle.seek(size if offset is None or offset > size else offset)
                first = False
            chunk = handle.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode("utf-8", errors="replace")
                continue
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is None or current.st_ino != inode or current.st_size < handle.tell():
                handle.close()
                handle = None
                pending = b""
                continue
            sleep(poll)
    finally:
        if handle is not None:
            handle.close()
