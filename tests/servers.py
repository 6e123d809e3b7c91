"""nx-27017 server processes for tests: free port, own data dir, pid and log files."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from evstream.embedded import free_port, port_answers, spawn_server, terminate, uri_for


class ServerProcess:
    """One nx-27017 server on 127.0.0.1 that a test can stop, kill and restart on the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.data_dir = root / "data"
        self.pid_file = root / "server.pid"
        self.log_file = root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return uri_for(self.port)

    def start(self, timeout: float = 20.0) -> ServerProcess:
        with_pid = self.pid_file
        if with_pid.exists():
            with_pid.unlink()
        self.proc = spawn_server(self.data_dir, self.port, self.pid_file, self.log_file)
        deadline = time.monotonic() + timeout
        while not port_answers(self.port, 0.2):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nx-27017 exited: {self.log_file.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("nx-27017 did not start in time")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            terminate(self.proc.pid)
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()
