"""The embedded dev store: an nx-27017 server that evstream starts on demand and reuses.

One server per data home (docs/dev-store.md). It listens on a Unix domain socket inside that
home, which only its owner can open, and on loopback TCP only when asked (`server start --tcp`).
Its address is kept across restarts: the socket's path never changes, and the TCP port is the
recorded one (`address.json`), else a fixed default derived from the home's path, else a free
one. Where a running server is lives in `server.json`; a lock file serialises starts so that two
evstream processes starting it at once end up sharing one server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from evstream.errors import EvstreamError, ServerUnreachable, StorageFull

RECORD_FILE = "server.json"
ADDRESS_FILE = "address.json"
LOCK_FILE = "server.lock"
SOCKET_FILE = "server.sock"
START_TIMEOUT = 20.0
# Default TCP ports come from this range, above Linux's ephemeral ports (32768-60999), so that a
# client's outgoing connection never holds the port the store wants.
PORT_RANGE = (61000, 65000)
# sockaddr_un holds 108 bytes with the terminating NUL (104 on macOS).
MAX_SOCKET_PATH = 103
DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True)
class ServerRecord:
    """Where a running embedded server is: written when it starts, read by later invocations."""

    pid: int
    port: int | None
    data_dir: str
    log_file: str
    started_at: float
    socket: str | None = None

    @property
    def uri(self) -> str:
        """The connection string evstream uses: the socket's where there is one, else TCP's."""
        if self.socket:
            return socket_uri(self.socket)
        assert self.port is not None
        return uri_for(self.port)

    @property
    def tcp_uri(self) -> str | None:
        """The loopback TCP connection string, for clients that need a port; None without TCP."""
        return uri_for(self.port) if self.port else None

    def client_uri(self, db: str | None = None) -> str:
        """`uri` naming a database, for clients that default to `test` (mongosh, mongoose)."""
        if self.socket:
            return socket_uri(self.socket, db)
        assert self.port is not None
        return uri_for(self.port, db=db)

    def tcp_client_uri(self, db: str | None = None) -> str | None:
        """`tcp_uri` naming a database: what `server start --tcp` prints for Node clients."""
        return uri_for(self.port, db=db) if self.port else None

    @property
    def where(self) -> str:
        """The address for a person: the socket's path, or 127.0.0.1:PORT."""
        parts = [self.socket] if self.socket else []
        if self.port:
            parts.append(f"127.0.0.1:{self.port}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Address:
    """What the store keeps across restarts (`address.json`): its TCP port and whether TCP is on."""

    port: int
    tcp: bool = False


@dataclass
class StartNotes:
    """What a start has to say once: notices (a taken port, a socket path too long) and
    warnings (TCP opened: any local user can reach the store)."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def uri_for(port: int, host: str = "127.0.0.1", db: str | None = None) -> str:
    """A pymongo URI for an nx-27017 server on this machine, naming `db` if given."""
    return f"mongodb://{host}:{port}/{quote(db or '', safe='')}?directConnection=true"


def socket_uri(path: str, db: str | None = None) -> str:
    """A pymongo URI for a server on a Unix domain socket (the path percent-encoded)."""
    return f"mongodb://{quote(path, safe='')}/{quote(db or '', safe='')}?directConnection=true"


def tcp_warning(port: int, why: str) -> str:
    """The warning said whenever the store opens TCP: the dev store has no authentication."""
    return (
        f"the embedded dev store listens on 127.0.0.1:{port} ({why}): any local user can "
        "connect and read or change its data, as it has no authentication; "
        "`evstream server restart --no-tcp` closes it"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_port(home: Path) -> int:
    """The fixed default TCP port of a data home: its path hashed into PORT_RANGE."""
    digest = hashlib.sha256(str(home.expanduser().absolute()).encode()).digest()
    low, high = PORT_RANGE
    return low + int.from_bytes(digest[:4], "big") % (high - low)


def port_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:port now (as asyncio does, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def sockets_supported(path: Path) -> bool:
    """Whether a Unix domain socket can live at this path (the platform has them; it is short)."""
    return hasattr(socket, "AF_UNIX") and len(os.fsencode(str(path))) <= MAX_SOCKET_PATH


def private_dir(path: Path) -> Path:
    """Create a directory (and its parents) and make it the owner's alone, whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace a file's content atomically with a file only its owner can read."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), FILE_MODE)
        handle.write(text)
    os.replace(tmp, path)


def open_private(path: Path, mode: str = "ab") -> Any:
    """Open a file for appending, creating it owner-only (and making an old one owner-only)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, mode)


def make_private(home: Path) -> None:
    """Make a data home and everything in it the owner's alone (homes made before this rule)."""
    private_dir(home)
    for root, dirs, files in os.walk(home):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(Path(root) / name, DIR_MODE)
        for name in files:
            path = Path(root) / name
            with contextlib.suppress(OSError):
                if stat.S_ISREG(path.lstat().st_mode):
                    os.chmod(path, FILE_MODE)


def server_command(
    data_dir: Path,
    port: int | None,
    pid_file: Path,
    log_file: Path,
    unix_socket: Path | None = None,
) -> list[str]:
    """The command line that runs an nx-27017 server in the foreground, quietly logged."""
    command = [sys.executable, "-m", "evstream.embedded", "--data-dir", str(data_dir)]
    if port:
        command += ["-p", str(port)]
    if unix_socket is not None:
        command += ["--unix-socket", str(unix_socket)]
    return [*command, "--pid-file", str(pid_file), "--log-file", str(log_file)]


def spawn_server(
    data_dir: Path,
    port: int | None,
    pid_file: Path,
    log_file: Path,
    unix_socket: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start an nx-27017 process detached from this one (it outlives the evstream command)."""
    private_dir(data_dir)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open_private(log_file) as log:
        return subprocess.Popen(
            server_command(data_dir, port, pid_file, log_file, unix_socket),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def port_answers(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def socket_answers(path: str | Path, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on a Unix domain socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            return True
    except OSError:
        return False


def answers(record: ServerRecord, timeout: float = 0.5) -> bool:
    """Whether the server of a record accepts connections where evstream connects to it."""
    if record.socket:
        return socket_answers(record.socket, timeout)
    return record.port is not None and port_answers(record.port, timeout)


def wait_until_answering(
    proc: subprocess.Popen[bytes], record: ServerRecord, log_file: Path, timeout: float
) -> None:
    """Block until the new server accepts connections; fail with its log's last line if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise start_failure(proc.returncode, log_file, Path(record.data_dir))
        if answers(record, 0.2) and (not record.port or port_answers(record.port, 0.2)):
            return
        time.sleep(0.05)
    proc.kill()
    raise ServerUnreachable(f"the embedded dev store did not answer within {timeout:.0f} s")


# A Python exception's own line in a traceback ("sqlite3.OperationalError: disk I/O error"):
# the cause, where the last line of the log is only a frame of the traceback.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b[^:\n]*: \S.*$")
LOW_SPACE = 1024 * 1024  # bytes free below which a store that fails to start is called full


def start_failure(code: int | None, log_file: Path, data_dir: Path) -> EvstreamError:
    """Why the dev store exited at start, in one line: the exception it logged (the last
    one), and when the disk of its data is full, that (docs/dev-store.md, "When it fails")."""
    cause = last_exception_line(log_file) or last_log_line(log_file)
    free = free_bytes(data_dir)
    if free is not None and free < LOW_SPACE:
        return StorageFull(
            f"the embedded dev store cannot start: the disk holding {data_dir} is full "
            f"({free // 1024:,} KiB free; the store said: {cause[:120]})",
            hint="free disk space there, or set EVSTREAM_HOME to a directory on another disk",
        )
    return EvstreamError(
        f"the embedded dev store exited at start (code {code}): {cause}",
        hint=f"see {log_file}",
    )


def last_exception_line(log_file: Path, tail: int = 64 * 1024) -> str | None:
    """The last exception line ("sqlite3.OperationalError: disk I/O error") near the end of a
    log, or None."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(max(0, log_file.stat().st_size - tail))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = [ln.strip() for ln in text.splitlines() if _EXCEPTION_LINE.match(ln)]
    return found[-1][:300] if found else None


def free_bytes(path: Path) -> int | None:
    """Bytes free for an unprivileged writer on the file system holding `path` (or its nearest
    existing parent), or None when it cannot be told."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                stats = os.statvfs(candidate)
            except OSError:
                return None
            return stats.f_bavail * stats.f_frsize
    return None


def last_log_line(log_file: Path) -> str:
    """The last non-empty line of a log file, for error messages."""
    try:
        lines = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][-300:] if lines else "no log"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat_file = Path(f"/proc/{pid}/stat")
    if stat_file.exists():
        with contextlib.suppress(OSError, IndexError):
            return stat_file.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


class DevStore:
    """The embedded dev store of one data home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = home / "data"
        self.record_path = home / RECORD_FILE
        self.address_path = home / ADDRESS_FILE
        self.log_file = home / "server.log"
        self.pid_file = home / "server.pid"
        self.socket_path = home / SOCKET_FILE
        self.notes = StartNotes()

    def read_record(self) -> ServerRecord | None:
        """The saved record, or None when there is none or it is unreadable."""
        try:
            raw = json.loads(self.record_path.read_text())
            return ServerRecord(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def address(self) -> Address:
        """The address kept for this home: the recorded one, else the home's default port."""
        try:
            raw = json.loads(self.address_path.read_text())
            return Address(port=int(raw["port"]), tcp=bool(raw.get("tcp", False)))
        except (OSError, ValueError, TypeError, KeyError):
            return Address(port=default_port(self.home))

    def running(self) -> ServerRecord | None:
        """The record of a live, answering server, or None (a stale record is ignored)."""
        record = self.read_record()
        if record and pid_alive(record.pid) and answers(record):
            return record
        return None

    def current_uri(self) -> str | None:
        """The URI of the running server, re-read from its record; None when none runs."""
        record = self.running()
        return record.uri if record else None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        private_dir(self.home)
        with open_private(self.home / LOCK_FILE, "a+b") as handle:
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows: best effort without a lock
                yield
                return
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def ensure_running(self, *, tcp: bool | None = None) -> tuple[ServerRecord, bool]:
        """A running server for this home, starting one if needed; (record, started_now).

        `tcp` None keeps what the home recorded (a store once started with --tcp keeps TCP).
        """
        record = self.running()
        if record:
            return record, False
        with self._locked():
            record = self.running()
            if record:
                return record, False
            return self._start(tcp), True

    def _start(self, tcp: bool | None) -> ServerRecord:
        self._reap_stale()
        make_private(self.home)
        kept = self.address()
        want_tcp = kept.tcp if tcp is None else tcp
        why = "as asked with --tcp" if tcp else "kept from when you last started it with --tcp"
        sock: Path | None = self.socket_path
        if not sockets_supported(self.socket_path):
            self.notes.lines.append(
                f"the path {self.socket_path} is too long for a Unix socket; the embedded dev "
                "store listens on loopback TCP instead"
            )
            sock, want_tcp = None, True
            why = "its socket path is too long"
        last_error: EvstreamError | None = None
        port = kept.port
        for attempt in range(3):  # a port can be taken between probing and binding
            if want_tcp and (attempt or not port_free(port)):
                taken, port = port, free_port()
                if not attempt:
                    self.notes.lines.append(
                        f"port {taken} is taken; the embedded dev store listens on {port} "
                        "instead and keeps that port from now on"
                    )
            record = ServerRecord(
                pid=0,
                port=port if want_tcp else None,
                data_dir=str(self.data_dir),
                log_file=str(self.log_file),
                started_at=time.time(),
                socket=str(sock) if sock else None,
            )
            proc = spawn_server(self.data_dir, record.port, self.pid_file, self.log_file, sock)
            try:
                wait_until_answering(proc, record, self.log_file, START_TIMEOUT)
            except EvstreamError as exc:
                last_error = exc
                continue
            record = ServerRecord(**{**asdict(record), "pid": proc.pid})
            write_private(self.record_path, json.dumps(asdict(record)))
            # The owner's choice, kept for the next start (a forced fallback is not a choice).
            chosen = want_tcp if sock is not None else bool(tcp if tcp is not None else kept.tcp)
            write_private(self.address_path, json.dumps({"port": port, "tcp": chosen}))
            if want_tcp:
                self.notes.warnings.append(tcp_warning(port, why))
            return record
        assert last_error is not None
        raise last_error

    def _reap_stale(self) -> None:
        """Forget a record whose process is gone, and stop one that no longer answers."""
        record = self.read_record()
        if record and pid_alive(record.pid):
            terminate(record.pid)
        for path in (self.record_path, self.pid_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                self.socket_path.unlink()

    def start(self, *, tcp: bool | None = None) -> tuple[ServerRecord, bool]:
        """Start the server unless it runs; (record, started_now).

        `tcp` True on a server running without TCP restarts it at the same socket with TCP
        (running watchers reconnect, as after `server restart`), and says so.
        """
        record = self.running()
        if record is not None and tcp and not record.port:
            with self._locked():
                record = self.running()
                if record is not None and not record.port:
                    self._stop_record(record)
                    started = self._start(True)
                    self.notes.lines.append(
                        f"the embedded dev store ran without TCP (pid {record.pid}); restarted "
                        f"it at the same socket with TCP added (pid {started.pid}); running "
                        "watchers reconnect by themselves"
                    )
                    return started, True
        return self.ensure_running(tcp=tcp)

    def _stop_record(self, record: ServerRecord) -> None:
        terminate(record.pid)
        self._reap_stale()

    def stop(self) -> ServerRecord | None:
        """Stop the server; returns the record of what was stopped, None if nothing ran."""
        with self._locked():
            record = self.read_record()
            alive = record is not None and pid_alive(record.pid)
            if record and alive:
                terminate(record.pid)
            self._reap_stale()
            return record if alive else None

    def restart(self, *, tcp: bool | None = None) -> tuple[ServerRecord | None, ServerRecord]:
        """Stop the server (if it runs) and start it again at the same address."""
        with self._locked():
            old = self.read_record()
            alive = old is not None and pid_alive(old.pid)
            # As it ran: the kept choice, unless the running server differs from it.
            if tcp is None and alive and old is not None and bool(old.port) != self.address().tcp:
                tcp = bool(old.port)
            return (old if alive else None), self._start(tcp)

    def data_size(self) -> int:
        """Bytes used by the data directory."""
        if not self.data_dir.exists():
            return 0
        return sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file())


def current_uri(home: Path) -> str | None:
    """The URI of the embedded dev store of `home` as its record says now, None if none runs.

    For a watcher that lost the store: the address is kept across restarts, so this is the URI
    it already has unless the kept port was taken at the restart.
    """
    return DevStore(home).current_uri()


def terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM a process, then SIGKILL it if it has not gone within `timeout` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def serve(argv: list[str]) -> int:
    """Run an nx-27017 server in this process: on a Unix socket and/or loopback TCP, quietly
    logged (nx-27017 logs every command at INFO), and stopped by SIGTERM without a traceback.

    nx-27017's own entry point binds TCP only and exits from its SIGTERM handler in the middle
    of the event loop, which logs a traceback per connected client; evstream runs nx-27017's
    connection handler in its own loop instead.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m evstream.embedded")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("-p", "--port", type=int, default=None)
    parser.add_argument("--unix-socket", default=None)
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--log-file", required=True)
    args = parser.parse_args(argv)
    if args.port is None and args.unix_socket is None:
        parser.error("give -p PORT, --unix-socket PATH or both")
    os.umask(0o077)  # the databases, WAL files and the socket: the owner's alone
    log = logging.FileHandler(args.log_file)
    log.setLevel(logging.WARNING)
    log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[log])
    logging.getLogger("neosqlite").setLevel(logging.ERROR)
    from nx_27017.handler import NeoSQLiteHandler

    handler = CursorIdsAsInt64(
        NeoSQLiteHandler(str(Path(args.data_dir) / "default.db"), data_dir=args.data_dir)
    )
    pid_file = Path(args.pid_file)
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        import asyncio

        asyncio.run(_serve(handler, args.port, args.unix_socket))
    finally:
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
    return 0


def cursor_ids_as_int64(reply: Any) -> Any:
    """A command's reply with its cursor id as a BSON int64, as MongoDB sends every cursor id.

    nx-27017 quirk: a change stream's cursor id (numbered from 1000) and every exhausted cursor's
    id 0 are Python ints that fit 32 bits, so they go out as int32. pymongo copes; mongosh 2.x
    and the Node driver 6+ do not (`BSON element "id" is missing`) and cannot watch at all.
    """
    cursor = reply.get("cursor") if isinstance(reply, dict) else None
    if isinstance(cursor, dict) and type(cursor.get("id")) is int:
        from bson.int64 import Int64  # noqa: TID251 - the dev server process encodes its replies

        cursor["id"] = Int64(cursor["id"])
    return reply


class CursorIdsAsInt64:
    """nx-27017's command handler with every reply's cursor id sent as int64
    (`cursor_ids_as_int64`); everything else is the handler's own."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)

    def handle_command(self, msg: dict[str, Any]) -> tuple[int, Any]:
        """Run a command; its cursor id as int64."""
        request_id, reply = self._handler.handle_command(msg)
        return request_id, cursor_ids_as_int64(reply)

    def handle_insert(self, msg: dict[str, Any]) -> tuple[int, Any]:
        """Run an insert (or a command with document sequences); its cursor id as int64."""
        request_id, reply = self._handler.handle_insert(msg)
        return request_id, cursor_ids_as_int64(reply)


async def _serve(handler: Any, port: int | None, unix_socket: str | None) -> None:
    """Serve clients until SIGTERM or SIGINT, then close every connection quietly."""
    import asyncio

    from nx_27017.server import handle_client

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await handle_client(reader, writer, handler)

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    servers = []
    if unix_socket is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(unix_socket)  # a socket left by a killed server refuses the bind
        servers.append(await asyncio.start_unix_server(client, path=unix_socket))
        os.chmod(unix_socket, FILE_MODE)
    if port is not None:
        servers.append(await asyncio.start_server(client, "127.0.0.1", port))
    try:
        await stopping.wait()
    finally:
        for server in servers:
            server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(unix_socket)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
