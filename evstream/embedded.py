"""The embedded dev store: an nx-27017 server that evstream starts on demand and reuses.

One server per data home. Its whereabouts live in `server.json` beside the data; a lock file
serialises starts so that two evstream processes starting it at once end up sharing one server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from evstream.errors import EvstreamError, ServerUnreachable

RECORD_FILE = "server.json"
LOCK_FILE = "server.lock"
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class ServerRecord:
    """Where a running embedded server is: written when it starts, read by later invocations."""

    pid: int
    port: int
    data_dir: str
    log_file: str
    started_at: float

    @property
    def uri(self) -> str:
        """The connection string for this server."""
        return uri_for(self.port)


def uri_for(port: int, host: str = "127.0.0.1") -> str:
    """A pymongo URI for an nx-27017 server on this machine."""
    return f"mongodb://{host}:{port}/?directConnection=true"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(data_dir: Path, port: int, pid_file: Path, log_file: Path) -> list[str]:
    """The command line that runs an nx-27017 server in the foreground, quietly logged."""
    return [
        sys.executable,
        "-m",
        "evstream.embedded",
        "--data-dir",
        str(data_dir),
        "-p",
        str(port),
        "--pid-file",
        str(pid_file),
        "--log-file",
        str(log_file),
    ]


def spawn_server(
    data_dir: Path, port: int, pid_file: Path, log_file: Path
) -> subprocess.Popen[bytes]:
    """Start an nx-27017 process detached from this one (it outlives the evstream command)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            server_command(data_dir, port, pid_file, log_file),
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


def wait_until_answering(
    proc: subprocess.Popen[bytes], port: int, log_file: Path, timeout: float
) -> None:
    """Block until the new server accepts connections; fail with its log's last line if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EvstreamError(
                f"the embedded dev store exited at start (code {proc.returncode}): "
                f"{last_log_line(log_file)}",
                hint=f"see {log_file}",
            )
        if port_answers(port, 0.2):
            return
        time.sleep(0.05)
    proc.kill()
    raise ServerUnreachable(f"the embedded dev store did not answer within {timeout:.0f} s")


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
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError, IndexError):
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


class DevStore:
    """The embedded dev store of one data home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = home / "data"
        self.record_path = home / RECORD_FILE
        self.log_file = home / "server.log"
        self.pid_file = home / "server.pid"

    def read_record(self) -> ServerRecord | None:
        """The saved record, or None when there is none or it is unreadable."""
        try:
            raw = json.loads(self.record_path.read_text())
            return ServerRecord(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def running(self) -> ServerRecord | None:
        """The record of a live, answering server, or None (a stale record is ignored)."""
        record = self.read_record()
        if record and pid_alive(record.pid) and port_answers(record.port):
            return record
        return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / LOCK_FILE, "a+") as handle:
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

    def ensure_running(self) -> tuple[ServerRecord, bool]:
        """A running server for this home, starting one if needed; (record, started_now)."""
        record = self.running()
        if record:
            return record, False
        with self._locked():
            record = self.running()
            if record:
                return record, False
            return self._start(), True

    def _start(self) -> ServerRecord:
        self._reap_stale()
        last_error: EvstreamError | None = None
        for _ in range(3):  # the free port can be taken between probing and binding
            port = free_port()
            proc = spawn_server(self.data_dir, port, self.pid_file, self.log_file)
            try:
                wait_until_answering(proc, port, self.log_file, START_TIMEOUT)
            except EvstreamError as exc:
                last_error = exc
                continue
            record = ServerRecord(
                pid=proc.pid,
                port=port,
                data_dir=str(self.data_dir),
                log_file=str(self.log_file),
                started_at=time.time(),
            )
            tmp = self.record_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(record)))
            os.replace(tmp, self.record_path)
            return record
        assert last_error is not None
        raise last_error

    def _reap_stale(self) -> None:
        """Forget a record whose process is gone, and stop one that no longer answers."""
        record = self.read_record()
        if record and pid_alive(record.pid):
            terminate(record.pid)
        with contextlib.suppress(FileNotFoundError):
            self.record_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def start(self) -> tuple[ServerRecord, bool]:
        """Start the server unless it runs; (record, started_now)."""
        return self.ensure_running()

    def stop(self) -> ServerRecord | None:
        """Stop the server; returns the record of what was stopped, None if nothing ran."""
        with self._locked():
            record = self.read_record()
            alive = record is not None and pid_alive(record.pid)
            if record and alive:
                terminate(record.pid)
            self._reap_stale()
            return record if alive else None

    def data_size(self) -> int:
        """Bytes used by the data directory."""
        if not self.data_dir.exists():
            return 0
        return sum(p.stat().st_size for p in self.data_dir.rglob("*") if p.is_file())


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
    """Run nx-27017 in this process with quiet logging (it logs every command at INFO)."""
    logging.basicConfig(level=logging.WARNING, handlers=[logging.NullHandler()])
    logging.getLogger("nx_27017").setLevel(logging.WARNING)
    logging.getLogger("neosqlite").setLevel(logging.ERROR)
    from nx_27017.nx_27017 import main as nx_main

    sys.argv = ["nx-27017", *argv]
    return int(nx_main() or 0)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
