"""The event model: input parsing, validation, ids and secret redaction. Standard library only."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from evstream.errors import InvalidInput

MAX_NAME_LENGTH = 256
MAX_ID_LENGTH = 256
# MongoDB's document limit; the server adds a little of its own to each insert command.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
REDACTED = "[redacted]"
# What `evstream watch` prints in place of a secret-looking field's value (unless --show-secrets).
MASK = "****"
INPUT_FIELDS = frozenset(
    {"type", "stream", "data", "meta", "id", "_id", "expected_version", "version", "ts"}
)
CHANGE_FIELDS = frozenset({"op", "collection", "key", "doc"})
# How far an event's `ts` may lag behind events committed before it (in-flight inserts, slow
# batches, publishers' clocks): the watch handover's margin (docs/handover.md), and the skew
# `check` lets pass before it reports "ts backwards".
TS_DISORDER = timedelta(seconds=2)


class InvalidEvent(InvalidInput):
    """One event's input is wrong; the message says what and, where known, on which line."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.reason = message
        self.lineno = line

    def at_line(self, line: int) -> InvalidEvent:
        """The same error, located on an input line."""
        return InvalidEvent(self.reason, line=line)


@dataclass(slots=True)
class EventInput:
    """What a caller asks to append: a validated event without its version or timestamp yet."""

    type: str
    stream: str
    data: dict[str, Any]
    meta: dict[str, Any] | None = None
    id: Any = None  # a string; a copy of a stored event may keep an ObjectId or a number
    expected_version: int | None = None
    ts: datetime | None = None
    line: int | None = None
    # The document to store, built ahead by a bulk publisher (its version is set when written).
    stored: dict[str, Any] | None = None
    # The version a stored event's line carried (`watch -o json`, mongoexport), else None.
    version: int | None = None
    # A copy's fields beyond the event schema (mongoose's `__v` …), stored as they were.
    extra: dict[str, Any] | None = None
    # Validated by `event_from_plain`, which found no secret-looking field name: nothing to redact.
    clean: bool = False

    @property
    def is_copy(self) -> bool:
        """Whether this is a stored event published again (a line with `version` and `ts`):
        it is stored exactly as given, secrets included (docs/data-model.md, "Copies")."""
        return self.version is not None and self.ts is not None


# --- ids -------------------------------------------------------------------------------------

_id_lock = threading.Lock()
_id_state = {"ms": -1, "counter": 0}
# Random bytes for ids, drawn from the OS in blocks: one system call per 512 ids, not two per id.
_random = {"pool": b"", "at": 0}
_POOL_BYTES = 10 * 512


def _random_bytes(n: int) -> bytes:
    """`n` bytes from os.urandom, taken from a pool refilled in blocks (call with _id_lock)."""
    at = _random["at"]
    pool = _random["pool"]
    if at + n > len(pool):  # type: ignore[arg-type]
        pool, at = os.urandom(_POOL_BYTES), 0
        _random["pool"] = pool
    _random["at"] = at + n  # type: ignore[operator]
    return pool[at : at + n]  # type: ignore[index,operator]


def _forget_pool() -> None:
    # A forked child must not draw the parent's bytes again: the same ids in two processes.
    _random["pool"], _random["at"] = b"", 0
    _id_state["ms"], _id_state["counter"] = -1, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def new_event_id() -> str:
    """A UUIDv7-style id: time-ordered as a string, monotonic within this process."""
    ms = time.time_ns() // 1_000_000
    with _id_lock:
        random = _random_bytes(10)
        if ms > _id_state["ms"]:
            # Start each millisecond low in the 12-bit counter space so it rarely overflows.
            _id_state["ms"], _id_state["counter"] = ms, int.from_bytes(random[8:], "big") & 0x3FF
        else:
            ms = _id_state["ms"]
            _id_state["counter"] += 1
            if _id_state["counter"] > 0xFFF:
                ms += 1
                _id_state["ms"], _id_state["counter"] = ms, 0
        counter = _id_state["counter"]
    tail = int.from_bytes(random[:8], "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | tail
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_id_time_ms(event_id: str) -> int | None:
    """The millisecond timestamp inside an evstream-generated id, or None for other ids."""
    h = event_id.replace("-", "")
    if len(h) != 32 or h[12] != "7":
        return None
    try:
        return int(h[:12], 16)
    except ValueError:
        return None


# --- validation ------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A lone UTF-16 surrogate ("\ud800" in JSON, or a byte that is not UTF-8 in a command-line
# argument) is not text: UTF-8, and so BSON, cannot encode it.
_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_REASON = "holds a lone UTF-16 surrogate (or bytes that are not UTF-8): not Unicode text"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _plain_name(value: Any, limit: int = MAX_NAME_LENGTH) -> bool:
    """A valid name in one look: printable (so no NUL or control character), not too long,
    neither starting with '$' nor blank at either end (a blank name goes the long way)."""
    return (
        type(value) is str
        and 0 < len(value) <= limit
        and value.isprintable()
        and value[0] not in "$ "
        and value[-1] != " "
    )


def check_name(kind: str, value: Any, limit: int = MAX_NAME_LENGTH) -> str:
    """Validate a stream name, event type or event id; returns it unchanged."""
    if _plain_name(value, limit):
        return value
    if not isinstance(value, str):
        raise InvalidEvent(f"{kind} must be a string, not {_type_name(value)}")
    if not value.strip():
        raise InvalidEvent(f"{kind} must not be empty")
    if len(value) > limit:
        raise InvalidEvent(f"{kind} is {len(value)} characters long; the limit is {limit}")
    if value.startswith("$"):
        raise InvalidEvent(f"{kind} {value[:40]!r} must not start with '$'")
    if "\x00" in value:
        raise InvalidEvent(f"{kind} must not contain a NUL character")
    if _CONTROL.search(value):
        raise InvalidEvent(f"{kind} {value[:40]!r} must not contain control characters")
    if _SURROGATE.search(value):
        raise InvalidEvent(f"{kind} {value[:40]!r} {SURROGATE_REASON}")
    return value


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the whole numbers BSON can store
# The highest expected version: the event then becomes version INT64_MAX, the last one BSON holds.
MAX_EXPECTED_VERSION = INT64_MAX - 1


def check_version(kind: str, value: Any, limit: int = MAX_EXPECTED_VERSION) -> int:
    """Validate a version or an expected version: a whole number from 0 to `limit`, which
    keeps the stored version within MongoDB's 8-byte ints."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and value >= 0:
            value = int(value)
        else:
            raise InvalidEvent(f"{kind} must be a whole number 0 or more, not {_type_name(value)}")
    if value < 0:
        raise InvalidEvent(f"{kind} must be 0 or more, not {value}")
    if value > limit:
        raise InvalidEvent(f"{kind} {value} is beyond MongoDB's 8-byte ints (at most {limit})")
    return value


def _check_keys(value: Any, where: str, depth: int = 0) -> None:
    if depth > 100:
        raise InvalidEvent(f"{where} is nested more than 100 levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidEvent(f"{where} has a non-string key {key!r}")
            if key[:1] == "$":
                raise InvalidEvent(f"{where} has a key {key[:40]!r} starting with '$'")
            if "\x00" in key:
                raise InvalidEvent(f"{where} has a key containing a NUL character")
            kind = type(item)
            if kind is str or kind is float or kind is bool or item is None:
                continue  # most values: nothing to check
            if isinstance(item, (dict, list)):
                _check_keys(item, f"{where}.{key}", depth + 1)
            elif isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
                raise InvalidEvent(f"{where}.{key} is a whole number beyond MongoDB's 8-byte ints")
    elif isinstance(value, list):
        for item in value:
            kind = type(item)
            if kind is str or kind is float or kind is bool or item is None:
                continue
            if isinstance(item, (dict, list)):
                _check_keys(item, where, depth + 1)
            elif isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
                raise InvalidEvent(f"{where} holds a whole number beyond MongoDB's 8-byte ints")


def find_surrogate(value: Any, where: str, depth: int = 0) -> str | None:
    """The path of the first string or field name holding a lone UTF-16 surrogate, or None."""
    if depth > 200:
        return None  # the nesting limit refuses it anyway
    if isinstance(value, str):
        return where if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return repr(path)
            found = find_surrogate(item, path, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_surrogate(item, f"{where}[{i}]", depth + 1)
            if found is not None:
                return found
    return None


def check_object(kind: str, value: Any, *, optional: bool) -> dict[str, Any] | None:
    """Validate `data` or `meta`: a JSON object whose keys MongoDB can store."""
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise InvalidEvent(f"{kind} must be a JSON object, not {_type_name(value)}")
    _check_keys(value, kind)
    return value


def parse_json_object(text: str, kind: str, loads: Callable[[str], Any]) -> dict[str, Any]:
    """Parse an option value such as --data into a JSON object, or say what is wrong with it."""
    try:
        value = loads(text)
    except ValueError as exc:
        raise InvalidEvent(f"{kind} is not valid JSON: {exc}") from None
    checked = check_object(kind, value, optional=False)
    assert checked is not None
    return checked


def unwrap_change(obj: dict[str, Any]) -> Any:
    """The event inside a line of `evstream watch --output json`; other objects pass through."""
    if "op" not in obj or "doc" not in obj or not set(obj) <= CHANGE_FIELDS:
        return obj
    if obj["op"] != "insert":
        raise InvalidEvent(f"a watched {obj['op']!r} change is not an event; only inserts are")
    return obj["doc"]


def event_from_object(
    obj: Any, *, line: int | None = None, copy_extra: dict[str, Any] | None = None
) -> EventInput:
    """Validate one decoded NDJSON line (or command-line options gathered into a dict).

    Besides the input fields, a stored event (`_id`, `version`, `ts`, as `watch --output json`
    or mongoexport print it) is accepted: its `version` becomes the expected version minus one,
    so a copy keeps the same versions or stops with a conflict. `copy_extra`: `obj` holds the
    canonical fields of a stored document of a mapped log (`evstream.fieldmap`), and these are
    the rest of it, kept as they were.
    """
    version: int | None = None
    try:
        if not isinstance(obj, dict):
            raise InvalidEvent(f"expected a JSON object, got {_type_name(obj)}")
        obj = unwrap_change(obj)
        if not isinstance(obj, dict):
            raise InvalidEvent(f"expected the change's doc to be an object, got {_type_name(obj)}")
        stored = copy_extra is not None or (
            obj.get("version") is not None and obj.get("ts") is not None
        )
        unknown = sorted(set(obj) - INPUT_FIELDS)
        extra = copy_extra or None
        if copy_extra is not None:
            _check_keys(copy_extra, "the stored event")
        elif unknown and stored:
            # A stored event another application wrote keeps its own fields in a copy.
            extra = {key: obj[key] for key in unknown}
            _check_keys(extra, "the stored event")
        elif unknown:
            raise InvalidEvent(
                f"unknown field {unknown[0]!r}; expected type, stream, data, meta, id, "
                "expected_version (or a stored event's _id, version, ts)"
            )
        if "type" not in obj:
            raise InvalidEvent("missing field 'type'")
        if "stream" not in obj:
            raise InvalidEvent("missing field 'stream'")
        event_id = obj.get("id", obj.get("_id"))
        if "id" in obj and "_id" in obj and obj["id"] != obj["_id"]:
            raise InvalidEvent("id and _id differ; give one of them")
        if stored and event_id is not None and _is_stored_id(event_id):
            kept_id: Any = event_id  # a copy keeps an ObjectId (or number) _id as it was
        else:
            kept_id = None if event_id is None else check_name("id", event_id, MAX_ID_LENGTH)
        ts = obj.get("ts")
        if ts is not None and not isinstance(ts, datetime):
            raise InvalidEvent('ts must be a date ({"$date": "..."}), not ' + _type_name(ts))
        expected = obj.get("expected_version")
        if expected is not None:
            expected = check_version("expected_version", expected)
        if obj.get("version") is not None:
            version = check_version("version", obj["version"], INT64_MAX)
            if version < 1:
                raise InvalidEvent("version must be 1 or more")
            if expected is not None and expected != version - 1:
                raise InvalidEvent(
                    f"version {version} and expected_version {expected} disagree "
                    "(version must be expected_version + 1)"
                )
            expected = version - 1
        data = obj.get("data")
        return EventInput(
            type=check_name("type", obj["type"]),
            stream=check_name("stream", obj["stream"]),
            data={} if data is None else check_object("data", data, optional=False) or {},
            meta=check_object("meta", obj.get("meta"), optional=True),
            id=kept_id,
            expected_version=expected,
            ts=ts,
            line=line,
            version=version,
            extra=extra,
        )
    except InvalidEvent as exc:
        raise exc.at_line(line) if line is not None else exc from None


# --- the common line in one look (docs/data-model.md, "Validation") -------------------------------

# The fields of a new event's line that `event_from_plain` takes; anything else goes the long way.
PLAIN_FIELDS = frozenset({"type", "stream", "data", "meta", "id", "expected_version"})
_INT64_END = 2**63
# A float this large may be a whole number beyond 64 bits that a fast parser read as a float
# (orjson does, silently): such a line goes the long way, where the exact parser keeps it whole.
_FLOAT_END = float(2**63)
# Field-name sets seen in data and meta, and what they hold: -1 a name that is not allowed (or
# not Unicode text), else (bytes << 1) | secret, where `secret` says a name looks like a secret
# and `bytes` bounds what the names take in BSON. Documents repeat their field names, so each
# set is judged once per process.
_NAME_SETS: dict[tuple[Any, ...], int] = {}
_NAME_SETS_MAX = 4096
# Type and stream names found plain (`_plain_name`): names repeat from event to event.
_NAMES: dict[str, None] = {}
_NAMES_MAX = 65536
# The most BSON bytes one element of a document or array takes besides its name and its text:
# its type byte, the name's NUL, an 8-byte number or a string's length and NUL or an embedded
# document's frame, and an array index's digits.
_ELEMENT_BYTES = 40
# A plain object whose data and meta may take more than this in BSON goes the long way, where
# its exact size is checked: what the other fields (names, id, version, ts) add stays below.
PLAIN_OBJECT_BYTES = MAX_DOCUMENT_BYTES - 16 * 1024


def _judge_names(names: tuple[Any, ...]) -> int:
    secret = 0
    chars = 0
    for name in names:
        if type(name) is not str or name[:1] == "$" or "\x00" in name:
            return -1
        if not name.isascii() and _SURROGATE.search(name):
            return -1
        if is_secret_key(name):
            secret = 1
        chars += len(name)
    return (4 * chars) << 1 | secret  # UTF-8 takes at most 4 bytes a character


def _plain_value(value: Any, depth: int, texts: bool = False) -> int:
    """-1 when anything in a data or meta value is unusual (the long way then says what), else
    (bytes << 1) | secret: `secret` 1 when a field name looks like a secret, `bytes` a bound on
    the value's size in BSON. `texts`: the value did not come from a JSON parser (the Python
    API), so a string may hold a lone surrogate, which is unusual."""
    if depth > 100:
        return -1
    if type(value) is dict:
        names = tuple(value)
        found = _NAME_SETS.get(names)
        if found is None:
            found = _judge_names(names)
            if len(_NAME_SETS) >= _NAME_SETS_MAX:
                _NAME_SETS.clear()
            _NAME_SETS[names] = found
        if found < 0:
            return -1
        items: Any = value.values()
    else:
        found = 0
        items = value
    chars = 0
    for item in items:
        kind = type(item)
        if kind is str:
            chars += len(item)
            if texts and not item.isascii() and _SURROGATE.search(item):
                return -1
            continue
        if kind is bool or item is None:
            continue
        if kind is int:
            if -_INT64_END <= item < _INT64_END:
                continue
            return -1
        if kind is float:
            if -_FLOAT_END < item < _FLOAT_END:
                continue
            return -1
        if kind is dict or kind is list:
            inner = _plain_value(item, depth + 1, texts)
            if inner < 0:
                return -1
            found += inner & -2
            found |= inner & 1
            continue
        return -1
    # UTF-8 takes at most 4 bytes a character.
    return found + ((4 * chars + _ELEMENT_BYTES * (len(value) + 1)) << 1)


def _plain_names(kind: Any, stream: Any) -> bool:
    """Whether an event's type and stream are both valid names, in one look (`_plain_name`)."""
    names = _NAMES
    if type(kind) is not str or type(stream) is not str:
        return False
    if kind in names and stream in names:
        return True
    if not (_plain_name(kind) and _plain_name(stream)):
        return False
    if len(names) >= _NAMES_MAX:
        names.clear()
    names[kind] = names[stream] = None
    return True


def event_from_plain(
    obj: Any, line: int | None = None, *, texts: bool = False
) -> EventInput | None:
    """The event of a plain new event's line (type, stream, data, meta, id, expected_version)
    in one look, or None for anything else: `event_from_object` then checks it field by field
    and says what is wrong. Where both accept a line they give the same event.

    One walk of data and meta checks their field names, their whole numbers and whether any
    name looks like a secret, judging each set of field names once per process. `texts`: `obj`
    comes from code, not from a JSON parser (the Python API), so the walk also looks for lone
    surrogates, and declines data and meta that might not fit in a document (`PLAIN_OBJECT_BYTES`;
    a line's length bounds that already).
    """
    if type(obj) is not dict:
        return None
    kind: Any
    stream: Any
    if len(obj) == 3 and "data" in obj and "stream" in obj and "type" in obj:
        kind, stream, data = obj["type"], obj["stream"], obj["data"]  # the common line
        event_id = meta = expected = None
    elif obj.keys() <= PLAIN_FIELDS:
        kind, stream, data = obj.get("type"), obj.get("stream"), obj.get("data")
        event_id, meta = obj.get("id"), obj.get("meta")
        expected = obj.get("expected_version")
        if event_id is not None and not _plain_name(event_id, MAX_ID_LENGTH):
            return None
        if expected is not None and (
            type(expected) is not int or not 0 <= expected <= MAX_EXPECTED_VERSION
        ):
            return None
    else:
        return None
    if data is None:
        data = {}
    names = _NAMES
    if not (
        type(kind) is str and type(stream) is str and kind in names and stream in names
    ) and not _plain_names(kind, stream):
        return None
    if type(data) is not dict:
        return None
    if meta is None:
        found = _plain_value(data, 0, texts)
    elif type(meta) is not dict:
        return None
    else:
        found = _plain_value(data, 0, texts)
        inner = _plain_value(meta, 0, texts) if found >= 0 else -1
        found = -1 if inner < 0 else (found + (inner & -2)) | (inner & 1)
    if found < 0 or (texts and found >> 1 > PLAIN_OBJECT_BYTES):
        return None
    # Positional, in the dataclass's order: type … line, stored, version, extra, clean.
    return EventInput(
        kind, stream, data, meta, event_id, expected, None, line, None, None, None, not found & 1
    )


def _is_stored_id(value: Any) -> bool:
    """An `_id` another application may have stored that a copy keeps as it is: an ObjectId, or
    a whole number (Extended JSON gives them as such)."""
    if type(value).__name__ == "ObjectId":
        return True
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


LINE_LIMIT = MAX_DOCUMENT_BYTES + 1024 * 1024


def decode_line(raw: bytes | None, line: int) -> str | None:
    """Decode one input line as UTF-8 text; None for a blank line, which is skipped."""
    if raw is None:
        raise InvalidEvent(
            f"line is over {LINE_LIMIT // (1024 * 1024)} MB; MongoDB stores documents up to 16 MB",
            line=line,
        )
    if b"\x00" in raw:
        raise InvalidEvent("binary data (a NUL byte); expected one JSON object per line", line=line)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"not UTF-8 text (byte {exc.start + 1})", line=line) from None
    if line == 1 and text.startswith("\ufeff"):
        text = text[1:]
    text = text.strip()
    return text or None


class Idle(bytes):
    """What a paced reader's `readline` answers when no whole line came in time."""


# Not a line: `iter_lines` passes it on (without counting a line), and a caller that does not
# look for it sees a blank line, which it skips.
IDLE = Idle()

# A line over LINE_LIMIT is read to its end to go on past it (`--skip-invalid`), but only this
# much further: input with no line end in sight (/dev/zero) stops there.
DRAIN_LIMIT = 4 * LINE_LIMIT


def iter_lines(
    stream: Any, *, limit: int = LINE_LIMIT, first: int = 1
) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, raw bytes) from a binary file, numbering from `first`; None for a
    line over `limit` bytes.

    A line too long is reported as soon as it passes `limit`, without being held in memory;
    its rest is read past only if the caller goes on, and only up to DRAIN_LIMIT bytes. An
    input that cannot be read (EIO, /proc/self/mem) is one input error.
    """
    number = first - 1
    while True:
        raw = _read(stream, limit + 1, number + 1)
        if raw is IDLE:
            yield number, raw
            continue
        if not raw:
            return
        number += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            yield number, None
            drained = 0
            while True:
                raw = _read(stream, 1024 * 1024, number)
                if raw is IDLE:
                    continue
                if not raw or raw.endswith(b"\n"):
                    break
                drained += len(raw)
                if drained > DRAIN_LIMIT:
                    raise InvalidEvent(
                        f"line has no end within {(limit + drained) // (1024 * 1024)} MB; "
                        "stopped reading there",
                        line=number,
                    )
            continue
        yield number, raw


def _read(stream: Any, size: int, line: int) -> bytes:
    try:
        return stream.readline(size)  # type: ignore[no-any-return]
    except OSError as exc:
        raise InvalidInput(f"cannot read the input at line {line}: {exc.strerror or exc}") from None


# --- secrets ---------------------------------------------------------------------------------

_SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "authorization",
    "credential",
    "privatekey",
    "accesskey",
    "cookie",
    "passcode",
    "signingkey",
    "encryptionkey",
    "sshkey",
    "clientkey",
    "authheader",
    "mfacode",
    "totp",
    "cvv",
)
_SECRET_EXACT = frozenset({"pwd", "pass", "auth", "jwt", "otp", "pin"})
# A field whose last word is one of these holds one too: db_pass, adminPwd (not compass).
_SECRET_LAST_WORDS = frozenset({"pass", "pwd"})
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a field name looks like it holds a secret (password, api_key, X-Auth-Token …)."""
    norm = re.sub(r"[^a-z0-9]", "", key.lower())
    return (
        norm in _SECRET_EXACT
        or (_WORDS.findall(key) or [""])[-1].lower() in _SECRET_LAST_WORDS
        or any(word in norm for word in _SECRET_WORDS)
    )


@functools.lru_cache(maxsize=4096)
def secret_keys(keys: tuple[Any, ...]) -> tuple[Any, ...]:
    """The secret-looking names among a document's field names (documents repeat their keys)."""
    return tuple(k for k in keys if isinstance(k, str) and is_secret_key(k))


def has_secret(value: Any) -> bool:
    """Whether any field, at any depth, has a secret-looking name (and a value to hide)."""
    if isinstance(value, dict):
        for k in secret_keys(tuple(value)):
            if value[k] not in (None, ""):
                return True
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return False
    # A plain loop: `any()` over a generator costs a frame per item, on every watched change;
    # the exact type checks first, as most values are strings and numbers.
    for item in items:
        kind = type(item)
        if kind is str or kind is int:
            continue
        if isinstance(item, (dict, list)) and has_secret(item):
            return True
    return False


def redact(value: Any, where: str = "", *, mask: str = REDACTED) -> tuple[Any, list[str]]:
    """A copy of `value` with secret-looking fields replaced by `mask`, and the paths replaced."""
    found: list[str] = []
    if not has_secret(value):
        return value, found

    def walk(item: Any, path: str) -> Any:
        if isinstance(item, dict):
            out = {}
            for key, sub in item.items():
                sub_path = f"{path}.{key}" if path else str(key)
                if (
                    isinstance(key, str)
                    and is_secret_key(key)
                    and sub not in (None, "", mask, REDACTED)
                ):
                    out[key] = mask
                    found.append(sub_path)
                else:
                    out[key] = walk(sub, sub_path)
            return out
        if isinstance(item, list):
            return [walk(sub, f"{path}[{i}]") for i, sub in enumerate(item)]
        return item

    return walk(value, where), found


def redact_event(event: EventInput) -> list[str]:
    """Redact a new event's data and meta in place; returns the paths that were replaced.

    A copy of a stored event (`EventInput.is_copy`) is left as it was stored: redaction applies
    to new events, and a copy stores its secrets as the log holds them (docs/data-model.md).
    """
    if event.clean or event.is_copy:
        return []
    event.data, in_data = redact(event.data, "data")
    found = list(in_data)
    if event.meta is not None:
        event.meta, in_meta = redact(event.meta, "meta")
        found.extend(in_meta)
    return found


def masked_paths(value: Any, where: str) -> list[str]:
    """The paths of secret-looking fields that hold `MASK`, as `watch` prints them masked."""
    if not has_secret(value):
        return []
    found: list[str] = []

    def walk(item: Any, path: str) -> None:
        if isinstance(item, dict):
            for key, sub in item.items():
                sub_path = f"{path}.{key}"
                if isinstance(key, str) and is_secret_key(key) and sub == MASK:
                    found.append(sub_path)
                else:
                    walk(sub, sub_path)
        elif isinstance(item, list):
            for i, sub in enumerate(item):
                walk(sub, f"{path}[{i}]")

    walk(value, where)
    return found


def check_copy(event: EventInput) -> None:
    """Refuse a copy of a stored event whose secrets `watch` masked (docs/data-model.md).

    Stored, the copy would hold "****" for good in place of the secret, under the same id, so
    a later, right copy would count as a duplicate and could not repair it. `--keep-secrets`
    (the caller not calling this) stores such a line as given.
    """
    if not event.is_copy:
        return
    paths = masked_paths(event.data, "data") + masked_paths(event.meta, "meta")
    if event.extra:
        paths += [p.removeprefix(".") for p in masked_paths(event.extra, "")]
    if paths:
        raise InvalidEvent(
            f"{paths[0]} is {MASK!r}, the mask 'evstream watch' prints in place of a secret, so "
            "this copy of a stored event would not be exact; copy with "
            "'evstream watch --show-secrets -o json' (or store the mask as given with "
            "--keep-secrets)",
            line=event.line,
        )


# --- documents evstream did not write (docs/data-model.md, "Foreign documents") ---------------

# The kinds of problem a stored document can have, in the order they are checked; each names
# the field that does not fit the event schema.
PROBLEM_KINDS = (
    "no stream",
    "stream not a string",
    "no version",
    "version not a positive integer",
    "no type",
    "type not a string",
    "no ts",
    "ts not a date",
)


def event_problem(doc: Mapping[str, Any], versioned: bool = True) -> str | None:
    """Why a stored document (as a canonical event, `evstream.fieldmap`) is not an event of the
    log's schema (a `PROBLEM_KINDS` entry), or None for one that is. An ObjectId `_id` and extra
    fields (`__v`) are fine. On a log without versions (`versioned` False) no version is asked.

    Every command that folds or counts events skips exactly the documents this names, so full
    and incremental rebuilds agree on them.
    """
    stream = doc.get("stream", _MISSING)
    version = doc.get("version", _MISSING)
    # The common document in one look: exact types, as the driver decodes evstream's events.
    if (
        type(stream) is str
        and stream
        and ((type(version) is int and version >= 1) or not versioned)
        and type(doc.get("type")) is str
        and type(doc.get("ts")) is datetime
    ):
        return None
    if stream is _MISSING or stream is None:
        return "no stream"
    if not isinstance(stream, str) or not stream:
        return "stream not a string"
    if versioned:
        if version is _MISSING or version is None:
            return "no version"
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            return "version not a positive integer"
    kind = doc.get("type", _MISSING)
    if kind is _MISSING or kind is None:
        return "no type"
    if not isinstance(kind, str):
        return "type not a string"
    ts = doc.get("ts", _MISSING)
    if ts is _MISSING or ts is None:
        return "no ts"
    if not isinstance(ts, datetime):
        return "ts not a date"
    return None


_MISSING: Any = object()


# The kind for documents counted without telling their problems apart (a server-side count).
UNSORTED = "not events"


@dataclass
class Skipped:
    """Documents a command skipped because they are not events (`event_problem`): how many of
    each kind, and the first few `_id`s, for the one stderr line and the JSON summary."""

    SAMPLE = 5
    counts: dict[str, int] = field(default_factory=dict)
    sample: list[Any] = field(default_factory=list)

    def add(self, doc: Mapping[str, Any], kind: str) -> None:
        """Count one skipped document."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.sample) < self.SAMPLE:
            self.sample.append(doc.get("_id"))

    @property
    def total(self) -> int:
        """How many documents were skipped."""
        return sum(self.counts.values())

    def line(self, what: str = "documents") -> str | None:
        """The stderr line: 'skipped 3 documents that are not events (2 no stream, …) …'."""
        if not self.total:
            return None
        kinds = ", ".join(
            f"{n:,} {kind}" for kind, n in sorted(self.counts.items()) if kind != UNSORTED
        )
        ids = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in self.sample)
        one = self.total == 1
        return (
            f"skipped {self.total:,} {what.rstrip('s') if one else what} that "
            f"{'is' if one else 'are'} not events{f' ({kinds})' if kinds else ''}; "
            f"first _ids: {ids} (run 'evstream check' for the log's health)"
        )

    def as_dict(self) -> dict[str, Any]:
        """For the JSON summary."""
        return {"total": self.total, "kinds": dict(self.counts), "sample_ids": list(self.sample)}


# --- partitions (docs/delivery.md, "Partitions") -------------------------------------------------

# The part that owns what belongs to no stream: a foreign document without a `stream` field (or
# with a null one), and a delete whose event's stream cannot be told (docs/delivery.md).
NO_STREAM_PART = 1


def partition_of(stream: str, parts: int) -> int:
    """The part (1 to `parts`) a stream belongs to: the first 8 bytes of the SHA-1 of its UTF-8
    name, read as a big-endian unsigned integer, modulo `parts`, plus 1.

    Stable across processes, machines and Python versions (unlike `hash()`, which is salted), so
    `rebuild --partition` and `watch --partition` workers agree on it.
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    digest = hashlib.sha1(stream.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % parts + 1


def part_of_stream(stream: Any, parts: int) -> int:
    """The part (1 to `parts`) that owns a stream of any value: a string by `partition_of`; a
    number, an object or any other value by the same hash of its canonical encoding
    (`canonical_text`), so that one stream always lands in one part; none (missing or null)
    in `NO_STREAM_PART`. The one rule for `watch --partition`, `rebuild --partition` and the API.
    """
    if isinstance(stream, str):
        return partition_of(stream, parts)
    if stream is None:
        if parts < 1:
            raise ValueError("parts must be at least 1")
        return NO_STREAM_PART
    # A leading NUL keeps these apart from the string streams of the same text.
    return partition_of("\0" + canonical_text(stream), parts)


def canonical_text(value: Any) -> str:
    """One text for one value as MongoDB compares values: integers and integral doubles alike
    (5, 5.0 and Int64(5) are one stream), an object's fields in their stored order (MongoDB
    compares embedded documents field by field, in order), strings quoted. Any other type (an
    ObjectId, a date …) by its type's name and its text, which are stable for a value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        fields = ",".join(f"{canonical_text(str(k))}:{canonical_text(v)}" for k, v in value.items())
        return "{" + fields + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_text(v) for v in value) + "]"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return f"date:{value.isoformat(timespec='milliseconds')}"
    return f"{type(value).__name__}:{value}"


def stream_of_change(
    key: Mapping[str, Any], doc: Mapping[str, Any] | None, before: Mapping[str, Any] | None = None
) -> Any:
    """The stream a change belongs to, or None: the document's `stream`; for a delete (no
    document), the document key's (a log sharded on `stream` carries it there) or the
    pre-image's (`before`, where the server keeps them)."""
    for source in (doc, key, before):
        if source is not None:
            stream = source.get("stream")
            if stream is not None:
                return stream
    return None


def part_of_change(
    parts: int,
    key: Mapping[str, Any],
    doc: Mapping[str, Any] | None,
    before: Mapping[str, Any] | None = None,
    *,
    seen: Any = None,
    log: bool = True,
) -> int:
    """The part that owns a change, by its stream's part (`part_of_stream`).

    In the log, the stream is `stream_of_change`'s, else `seen` (the stream the caller saw the
    same event in before, as a watch remembers it for a delete), else none (NO_STREAM_PART).
    In another collection (`log` False: a projection's, whose documents are keyed by their
    stream, as `rebuild --partition` places them), the document key's `_id` is the stream.
    """
    if not log:
        return part_of_stream(key.get("_id"), parts)
    stream = stream_of_change(key, doc, before)
    return part_of_stream(seen if stream is None else stream, parts)


def parse_partition(text: str | None) -> tuple[int, int] | None:
    """`--partition I/N` (parts numbered 1 to N) as (I, N); None for none (or 1/1)."""
    if text is None:
        return None
    left, sep, right = text.partition("/")
    try:
        part, parts = int(left), int(right)
    except ValueError:
        part = parts = 0
    if not sep or not 1 <= part <= parts or parts > 10_000:
        raise InvalidInput(f"--partition takes I/N with 1 <= I <= N (e.g. 2/4), not {text!r}")
    return (part, parts) if parts > 1 else None
