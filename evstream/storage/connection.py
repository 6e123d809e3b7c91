"""Connecting: the URI, the client's settings, and the adapter for the server found there
(docs/storage.md, "Connecting").
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Callable
from datetime import timezone
from typing import Any

from pymongo import MongoClient, uri_parser

from evstream.errors import InvalidInput, ServerUnreachable
from evstream.fieldmap import FieldMap, from_table
from evstream.settings import Settings, mask_uri, scrub
from evstream.storage.errors import translate_errors
from evstream.storage.mongo import ConnectionLosses, MongoStore
from evstream.storage.nx27017 import Nx27017Store, is_nx27017

# How long a command waits for a server to select (for a primary, in an election). MongoDB's
# documentation gives a median election under 12 s; 30 s rides out routine failovers.
DEFAULT_TIMEOUT_MS = 30_000
# After this long without a server, say what evstream is waiting for.
WAITING_NOTICE_S = 2.0
_DB_NAME = re.compile(r'^[^/\\. "$*<>:|?\x00]{1,63}$')


def check_db_name(name: str) -> str:
    """MongoDB's database-name rules, checked before a server ever sees the name."""
    if not _DB_NAME.match(name):
        raise InvalidInput(
            f"invalid database name {name[:70]!r}: 1 to 63 characters, "
            'none of / \\ . " $ * < > : | ?'
            " or spaces"
        )
    return name


def check_uri(uri: str) -> tuple[set[str], list[tuple[str, int | None]]]:
    """Refuse a malformed URI or bad option value (pymongo only warns); its options and hosts."""
    if uri.startswith("mongodb+srv://"):
        # Parsing one means a DNS lookup; MongoClient reports those failures itself.
        query = uri.partition("?")[2]
        return {part.split("=", 1)[0].lower() for part in query.split("&") if part}, []
    try:
        parsed = uri_parser.parse_uri(uri, warn=False)
    except ValueError as exc:
        raise InvalidInput(f"invalid MongoDB URI: {scrub(str(exc), uri)}") from None
    return {name.lower() for name in parsed["options"]}, list(parsed["nodelist"])


def refused_at_once(hosts: list[tuple[str, int | None]], timeout: float) -> str | None:
    """With a single host, whether it refuses connections outright (nothing listens there).

    pymongo would retry a refused host until server selection times out (30 s); a refusal is
    an answer, not a passing condition, so evstream says so at once. A host that does not
    answer at all, or several hosts (a replica set in an election), is left to pymongo.
    """
    if len(hosts) != 1:
        return None
    host, port = hosts[0]
    try:
        if host.endswith(".sock"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(host)
        else:
            socket.create_connection((host, port or 27017), timeout=timeout).close()
    except (ConnectionRefusedError, FileNotFoundError):
        return f"{host}:{port or 27017}" if not host.endswith(".sock") else host
    except OSError:
        return None
    return None


# A `[log]` table as JSON, for tests and scripts that have no config file to put it in.
LOG_MAP_ENV = "EVSTREAM_LOG_MAP"


def settings_map(settings: Settings) -> FieldMap:
    """The field map of the settings' `[log]` table (else of $EVSTREAM_LOG_MAP, a JSON table),
    validated: InvalidInput naming the file on a bad one."""
    table, source = settings.log, settings.log_source
    if table is None and os.environ.get(LOG_MAP_ENV):
        try:
            table = json.loads(os.environ[LOG_MAP_ENV])
        except ValueError as exc:
            raise InvalidInput(f"${LOG_MAP_ENV} is not a JSON object: {exc}") from None
        source = f"${LOG_MAP_ENV}"
    return from_table(table, source)


def connect(
    settings: Settings,
    notice: Callable[[str], None],
    warning: Callable[[str], None] | None = None,
    *,
    verify: bool = True,
) -> MongoStore:
    """Open the configured store (or the embedded dev store), choosing the adapter for it.

    `warning` gets what is said even with --quiet (TCP opened by an auto-start); else `notice`.
    The field map (`settings.log`, docs/adopting.md) is checked before anything is reached: a
    bad `[log]` table is a usage error naming its file (exit 2); with `verify`, so is one whose
    paths the log's newest documents do not have (`evstream init` asks without).
    """
    check_db_name(settings.db)
    fieldmap = settings_map(settings)
    embedded = settings.uri is None
    if embedded:
        from evstream.embedded import DevStore

        dev = DevStore(settings.data_home)
        record, started = dev.ensure_running()
        uri = record.uri
        description = f"embedded dev store at {record.where} (data in {record.data_dir})"
        for line in dev.notes.lines:  # a taken port, a socket path too long: said once
            notice(line)
        for line in dev.notes.warnings:  # TCP opened: any local user can reach the store
            (warning or notice)(line)
        if started or settings.verbose:  # not on every command (docs/dev-store.md)
            notice(f"{'started' if started else 'using'} the {description}")
    else:
        assert settings.uri is not None
        uri = settings.uri
        description = f"MongoDB at {mask_uri(uri)}"
    timeout = int(os.environ.get("EVSTREAM_TIMEOUT_MS", DEFAULT_TIMEOUT_MS))
    with translate_errors(uri):
        given, hosts = check_uri(uri)
        refused = refused_at_once(hosts, min(timeout, 5000) / 1000)
        if refused is not None:
            raise ServerUnreachable(
                f"cannot reach {mask_uri(uri)}: connection refused by {refused}",
                hint="is the server running, and is this its address and port?",
            )
        defaults: dict[str, Any] = {
            "serverSelectionTimeoutMS": timeout,
            "connectTimeoutMS": min(timeout, 10_000),
            "appname": "evstream",
        }
        # Counts lost connections, so a change stream can tell that pymongo resumed it by
        # itself (docs/storage.md, "Lost connections").
        losses = ConnectionLosses()
        client: MongoClient[dict[str, Any]] = MongoClient(
            uri,
            tz_aware=True,
            tzinfo=timezone.utc,
            event_listeners=[losses],
            **{k: v for k, v in defaults.items() if k.lower() not in given},
        )
        try:
            info = _build_info(client, notice)
        except BaseException:
            client.close()
            raise
    adapter = Nx27017Store if is_nx27017(info) else MongoStore
    store = adapter.open(
        client,
        settings.db,
        uri,
        embedded=embedded,
        description=description,
        version=str(info["version"]) if info.get("version") else None,
        timeout_s=timeout / 1000,
        losses=losses,
        fieldmap=fieldmap,
    )
    if verify and fieldmap.shaped:
        from evstream.storage.log import verify_map

        try:
            with translate_errors(uri):
                verify_map(store)
        except BaseException:
            store.close()
            raise
    if not embedded and settings.verbose:  # not on every command: it clutters scripts
        notice(f"using {description}, database {settings.db}")
    return store


def _build_info(
    client: MongoClient[dict[str, Any]], notice: Callable[[str], None]
) -> dict[str, Any]:
    """buildInfo from the primary; says after a couple of seconds that it is waiting for one."""
    timer = threading.Timer(
        WAITING_NOTICE_S,
        notice,
        ["waiting for the server (a replica set electing a primary, or a slow link) …"],
    )
    timer.daemon = True
    timer.start()
    try:
        return dict(client.admin.command("buildInfo"))
    finally:
        timer.cancel()
