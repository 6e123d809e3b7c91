"""Resolved configuration: what every command needs, and where each value came from.

The layers (options, environment variables, the project file, a context, defaults) are read by
`evstream.config.resolve_settings` (docs/configuration.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

DEFAULT_DB = "evstream"
OUTPUT_MODES = ("auto", "pretty", "json")


@dataclass(frozen=True)
class Origin:
    """Where a setting's value came from: an option, an environment variable, the project file,
    a context of the user file, or the built-in default."""

    kind: str  # "option" | "env" | "file" | "context" | "default"
    name: str | None = None  # the option, the variable or the context
    file: str | None = None
    line: int | None = None
    via: str | None = None  # uri_env: the variable the file named
    note: str | None = None  # what a default means ("the URI's database")

    def describe(self) -> str:
        """For a person: `env EVSTREAM_DB`, `/p/evstream.toml:3`, `context prod (…:5)`."""
        place = f"{self.file}:{self.line}" if self.file and self.line else self.file or ""
        if self.via:
            place += f", through ${self.via}"
        if self.kind == "option":
            return f"option {self.name}"
        if self.kind == "env":
            return f"env {self.name}"
        if self.kind == "file":
            return f"file {place}"
        if self.kind == "context":
            return f"context {self.name} ({place})"
        return f"default ({self.note})" if self.note else "default"

    def as_dict(self) -> dict[str, Any]:
        """For JSON output: only what is known."""
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Settings:
    """What every command needs to know about where the data lives and how to show it."""

    uri: str | None
    db: str
    output: str = "auto"
    debug: bool = False
    home: Path | None = None
    verbose: bool = False  # say which store is used on every command, not only when started
    quiet: bool = False  # no notices on stderr (warnings and errors still)
    # The log's `[log]` table as written (the field map), and the file it came from.
    log: dict[str, Any] | None = field(default=None, compare=False)
    log_source: str | None = None
    projections: tuple[str, ...] = ()  # modules that rebuild loads, after the built-ins
    context: str | None = None  # the selected context of the user file
    # Where each setting came from (`evstream config`), and the files that were read.
    origins: dict[str, Origin] = field(default_factory=dict, compare=False)
    project_file: str | None = None
    user_file: str | None = None
    contexts: tuple[str, ...] = ()  # the contexts the user file defines

    @property
    def data_home(self) -> Path:
        """The directory that holds the embedded dev store's data and its server record."""
        return self.home or default_home()


def resolve_uri(option: str | None, env: dict[str, str] | None = None) -> str | None:
    """--uri, then EVSTREAM_URI, then MONGODB_URI; None means the embedded dev store."""
    env = os.environ if env is None else env
    for value in (option, env.get("EVSTREAM_URI"), env.get("MONGODB_URI")):
        if value:
            return value
    return None


def resolve_settings(
    uri: str | None = None,
    db: str | None = None,
    *,
    context: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Settings for `evstream.connect(uri, db, context=)`: these as the options, then the
    environment, the project file, the context and the defaults, exactly as the CLI resolves
    them (`evstream.config.resolve_settings`, docs/configuration.md)."""
    from evstream.config import resolve_settings as resolve

    return resolve({"uri": uri, "db": db, "context": context}, env)


def uri_database(uri: str | None) -> str | None:
    """The database named in a URI's path (`mongodb://host/shop` → shop), as mongosh uses it."""
    if not uri or "://" not in uri:
        return None
    rest = uri.split("://", 1)[1]
    if "/" not in rest:
        return None
    path = rest.split("/", 1)[1].split("?", 1)[0]
    return unquote(path) or None


def resolve_db(option: str | None, uri: str | None) -> str:
    """--db (or EVSTREAM_DB), else the database in the URI's path, else `evstream`."""
    if option is not None:
        return option
    return uri_database(uri) or DEFAULT_DB


def default_home(env: dict[str, str] | None = None) -> Path:
    """EVSTREAM_HOME, else the per-user data directory of the platform."""
    env = os.environ if env is None else env
    if env.get("EVSTREAM_HOME"):
        return Path(env["EVSTREAM_HOME"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "evstream"
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "evstream"
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "evstream"


def mask_uri(uri: str) -> str:
    """The URI with any password replaced by ****, safe to print."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:****@{hosts}{slash}{tail}"


def uri_password(uri: str | None) -> str | None:
    """The password embedded in a URI, raw and percent-decoded, so messages can be scrubbed."""
    if not uri or "://" not in uri:
        return None
    authority = uri.split("://", 1)[1].split("/", 1)[0]
    userinfo, at, _ = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    password = userinfo.split(":", 1)[1]
    return password or None


def scrub(message: str, uri: str | None) -> str:
    """Remove a URI's password from a message, in whichever form it appears."""
    password = uri_password(uri)
    if not password:
        return message
    for form in {password, unquote(password)}:
        if form:
            message = message.replace(form, "****")
    return message
