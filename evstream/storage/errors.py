"""pymongo's exceptions, translated into evstream's own (docs/storage.md, "Errors").

Only the storage package sees driver exceptions; services see `evstream.errors` classes, and the
codes below are the one list of what a server error means to evstream.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from bson.errors import BSONError
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    InvalidName,
    InvalidURI,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from evstream.errors import (
    EvstreamError,
    FeatureUnsupported,
    HistoryLost,
    IndexProblem,
    InvalidInput,
    NotAuthorized,
    ServerUnreachable,
    StorageFull,
)
from evstream.settings import mask_uri, scrub

AUTHENTICATION_CODES = {18, 11}  # AuthenticationFailed, UserNotFound
UNAUTHORIZED = 13  # authenticated, but without the privilege (not a wrong password)
NO_CHANGE_STREAMS_CODES = {40573}  # "The $changeStream stage is only supported on replica sets"
DUPLICATE_KEY = 11000
INDEX_CONFLICT_CODES = {85, 86}  # IndexOptionsConflict, IndexKeySpecsConflict
# The change history no longer reaches a resume point: MongoDB's ChangeStreamHistoryLost,
# InvalidResumeToken, ChangeStreamFatalError, and the older CappedPositionLost and 40576
# ("resume of change stream was not possible, as the resume point may no longer be in the oplog").
HISTORY_LOST_CODES = {
    286: "ChangeStreamHistoryLost",
    260: "InvalidResumeToken",
    280: "ChangeStreamFatalError",
    136: "CappedPositionLost",
    40576: "ChangeStreamHistoryLost",
}
# Server errors that mean "try again on a healthy connection" (shutdown, step-down, cursor lost):
# HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress, PrimarySteppedDown,
# ExceededTimeLimit, SocketException, NotWritablePrimary, InterruptedAtShutdown,
# InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
# StaleShardVersion, StaleEpoch, StaleConfig, RetryChangeStream, FailedToSatisfyReadPreference,
# CursorNotFound (a cursor killed by a failover), ReadConcernMajorityNotAvailableYet.
RETRYABLE_CODES = {
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 13388, 234, 133,
    43, 134,
}  # fmt: skip
# Out of disk space: MongoDB's OutOfDiskSpace (14031), and the words a server's storage engine
# uses when its disk fills (SQLite on the dev store: "database or disk is full").
OUT_OF_SPACE_CODES = {14031}
OUT_OF_SPACE_WORDS = ("database or disk is full", "no space left on device", "outofdiskspace")
_COMMAND = re.compile(r"execute command \{\s*(\w+):\s*\"([^\"]*)\"")
_ON_DB = re.compile(r"not authorized on (\S+)")


def duplicates_only(exc: BulkWriteError) -> set[int]:
    """The indexes of an unordered bulk write's operations that met an existing document
    (duplicate key); the error again when any other failed, or none is named."""
    errors = (exc.details or {}).get("writeErrors") or []
    if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return {int(e["index"]) for e in errors}


def is_retryable(exc: BaseException) -> bool:
    """Whether a driver error is worth retrying on a healthy connection (an election, a restart)."""
    if isinstance(exc, ConnectionFailure):
        return True
    if not isinstance(exc, OperationFailure):
        return False
    if exc.code in RETRYABLE_CODES:
        return True
    return bool(
        exc.has_error_label("ResumableChangeStreamError")
        or exc.has_error_label("RetryableWriteError")
        or exc.has_error_label("TransientTransactionError")
    )


def history_lost_name(exc: BaseException) -> str | None:
    """The name of the 'change history lost' condition this error is, or None."""
    if isinstance(exc, OperationFailure) and exc.code in HISTORY_LOST_CODES:
        return HISTORY_LOST_CODES[exc.code or 0]
    return None


@contextlib.contextmanager
def translate_errors(uri: str | None = None) -> Iterator[None]:
    """Turn pymongo's exceptions into evstream errors with one clear, password-free line."""
    try:
        yield
    except EvstreamError:
        raise
    except InvalidURI as exc:
        raise InvalidInput(f"invalid MongoDB URI: {scrub(str(exc), uri)}") from None
    except ConfigurationError as exc:
        raise InvalidInput(f"invalid MongoDB URI or option: {scrub(str(exc), uri)}") from None
    except InvalidName as exc:
        raise InvalidInput(scrub(str(exc), uri)) from None
    except ServerSelectionTimeoutError as exc:
        where = mask_uri(uri) if uri else "the server"
        reason = scrub(driver_message(exc, 300), uri)
        raise ServerUnreachable(f"cannot reach {where}: {reason}") from None
    except ConnectionFailure as exc:
        reason = scrub(driver_message(exc, 300), uri)
        raise ServerUnreachable(f"lost the connection to the server: {reason}") from None
    except OperationFailure as exc:
        raise translate_operation_failure(exc, uri) from None
    except BSONError as exc:
        # bson's messages can quote the value it could not encode: only its kind is said.
        raise EvstreamError(
            f"the driver could not encode or decode a document ({type(exc).__name__})"
        ) from None
    except PyMongoError as exc:
        raise EvstreamError(f"the driver failed: {scrub(driver_message(exc, 300), uri)}") from None
    except KeyError as exc:
        from evstream.storage.nx27017 import no_authentication

        if not no_authentication(exc):
            raise
        raise ServerUnreachable(
            "authentication failed: the server does not support authentication (nx-27017)",
            hint="remove the user name and password from the URI",
        ) from None


def translate_operation_failure(exc: OperationFailure, uri: str | None = None) -> EvstreamError:
    """The evstream error for a command the server refused."""
    message = scrub(server_message(exc), uri)
    if is_out_of_space(server_code(exc), message):
        return out_of_space(message)
    if exc.code in AUTHENTICATION_CODES:
        return ServerUnreachable(
            f"authentication failed: {message}",
            hint="check the user name, password and authSource in the URI",
        )
    if exc.code == UNAUTHORIZED:
        return not_authorized(message)
    if exc.code in NO_CHANGE_STREAMS_CODES:
        return FeatureUnsupported(message)
    if exc.code in INDEX_CONFLICT_CODES:
        return IndexProblem(
            f"an index conflicts with one evstream needs: {message[:300]}",
            hint="run 'evstream check' for the index and the command that fixes it",
        )
    name = history_lost_name(exc)
    if name is not None:
        return HistoryLost(f"the server's change history was lost ({name}): {message[:200]}")
    return EvstreamError(f"the server refused: {message[:300]}")


def not_authorized(message: str) -> NotAuthorized:
    """Code 13: the user lacks a privilege. Names the action and namespace where MongoDB does."""
    command = _COMMAND.search(message)
    on = _ON_DB.search(message)
    if command and on:
        what = f"not authorised to {command.group(1)} on {on.group(1)}.{command.group(2)}"
    elif on:
        what = f"not authorised on {on.group(1)}"
    else:
        what = "not authorised"
    return NotAuthorized(
        f"{what} ({message[:200]})",
        hint="grant the user a role with that privilege (readWrite on the database; "
        "createIndex for the indexes evstream needs)",
    )


def driver_message(exc: BaseException, limit: int = 200) -> str:
    """pymongo's message without the timeout settings, topology and full-reply dumps it appends
    (a reply can hold the documents of a write: never printed)."""
    text = str(exc)
    for cut in (", Timeout:", " (configured timeouts", ", Topology Description:", ", full error:"):
        text = text.split(cut)[0]
    return text[:limit]


def server_message(exc: OperationFailure) -> str:
    """The server's own errmsg, without pymongo's full-reply dump: a bulk write's reply holds
    the documents it failed to write (`op`), which may hold secrets, so only the first write
    error's errmsg is taken from it."""
    details = exc.details or {}
    message = details.get("errmsg")
    if not message:
        first = (details.get("writeErrors") or [{}])[0]
        concern = details.get("writeConcernError") or {}
        message = first.get("errmsg") or concern.get("errmsg")
    return " ".join(str(message or driver_message(exc)).split())


def server_code(exc: OperationFailure) -> int | None:
    """The error's code; for a bulk write, its first write error's (pymongo's own is 65)."""
    first = ((exc.details or {}).get("writeErrors") or [{}])[0]
    return first.get("code", exc.code)


def is_out_of_space(code: int | None, message: str) -> bool:
    """Whether a server error says its disk is full."""
    lowered = message.lower()
    return code in OUT_OF_SPACE_CODES or any(words in lowered for words in OUT_OF_SPACE_WORDS)


def out_of_space(message: str) -> StorageFull:
    """The one line for a server out of disk space (docs/storage.md, "Errors")."""
    return StorageFull(
        f"the server is out of disk space ({message[:120]})",
        hint="free disk space on the disk that holds the server's data, then run the command again",
    )


__all__ = [
    "DUPLICATE_KEY",
    "HISTORY_LOST_CODES",
    "NO_CHANGE_STREAMS_CODES",
    "driver_message",
    "history_lost_name",
    "is_out_of_space",
    "is_retryable",
    "out_of_space",
    "translate_errors",
]
