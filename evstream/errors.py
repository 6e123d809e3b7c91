"""The error hierarchy and the exit codes (README, "Exit codes"), in one place."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; the contract users script against."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    UNREACHABLE = 3
    UNSUPPORTED = 4
    CONFLICT = 5
    HANDLER_FAILED = 6
    PROBLEMS_FOUND = 7
    INTERRUPTED = 130
    TERMINATED = 143  # 128 + SIGTERM, as shells report a process that SIGTERM ended


class EvstreamError(Exception):
    """An error with a user-facing message; the CLI prints it as one line and exits."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        """The one line shown on stderr."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidInput(EvstreamError):
    """Bad options, bad event input, bad URI: exit 2."""

    exit_code = ExitCode.USAGE


class EventRefused(InvalidInput):
    """The server refused to store an event (a collection validator, a value it cannot store):
    exit 2, as for other input that cannot be stored."""


class ServerUnreachable(EvstreamError):
    """The server cannot be reached or refuses our credentials: exit 3."""

    exit_code = ExitCode.UNREACHABLE


class FeatureUnsupported(EvstreamError):
    """The server lacks something the command needs (e.g. change streams): exit 4."""

    exit_code = ExitCode.UNSUPPORTED


class ConcurrencyConflict(EvstreamError):
    """An expected-version check failed; nothing was written: exit 5."""

    exit_code = ExitCode.CONFLICT


class Interrupted(EvstreamError):
    """The user pressed Ctrl-C: exit 130."""

    exit_code = ExitCode.INTERRUPTED


class Terminated(Interrupted):
    """SIGTERM (systemd, Docker, Kubernetes stopping it), handled as Ctrl-C is: exit 143."""

    exit_code = ExitCode.TERMINATED


class StorageFull(EvstreamError):
    """The server is out of disk space (MongoDB's OutOfDiskSpace, SQLite's "database or disk is
    full" on the dev store): exit 3, as for a server that cannot be reached. Nothing is wrong
    with the input; the same command succeeds once space is freed (docs/storage.md, "Errors")."""

    exit_code = ExitCode.UNREACHABLE


class ConnectionLost(ServerUnreachable):
    """The connection to the server was lost and did not come back in time: exit 3."""


class NotAuthorized(ServerUnreachable):
    """The user is authenticated but lacks a privilege the command needs (code 13): exit 3."""


class Transient(EvstreamError):
    """A passing server condition (an election, a lost connection) that outlived the retries."""

    exit_code = ExitCode.UNREACHABLE


class HistoryLost(EvstreamError):
    """The server's change history no longer reaches back to a saved position."""

    exit_code = ExitCode.USAGE


class IndexProblem(FeatureUnsupported):
    """An index evstream relies on is missing, cannot be created, or conflicts: exit 4."""
