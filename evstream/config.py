"""Configuration files and named contexts, resolved into `Settings` (docs/configuration.md).

Each setting comes from the first layer that has it: the command's option, its environment
variable, the project file (`evstream.toml` in the working directory or its nearest parent, else
`[tool.evstream]` in a `pyproject.toml`, found the way ruff finds its configuration), the selected
context (`[contexts.NAME]` in `$XDG_CONFIG_HOME/evstream/config.toml`), and the built-in default.
`resolve_settings` is the one function that does it, for the CLI and for `evstream.connect()`.

Stdlib only (tomllib, or tomli before Python 3.11), so `--help` stays fast.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evstream.errors import InvalidInput
from evstream.settings import DEFAULT_DB, OUTPUT_MODES, Origin, Settings, uri_database

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROJECT_FILE = "evstream.toml"
PYPROJECT_FILE = "pyproject.toml"
PYPROJECT_TABLE = ("tool", "evstream")
USER_DIR = "evstream"
USER_FILE = "config.toml"

CONTEXT_ENV = "EVSTREAM_CONTEXT"
PROJECTIONS_ENV = "EVSTREAM_PROJECTIONS"
# The environment variables of each setting, first one set wins.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "uri": ("EVSTREAM_URI", "MONGODB_URI"),
    "db": ("EVSTREAM_DB",),
    "output": ("EVSTREAM_OUTPUT",),
    "projections": (PROJECTIONS_ENV,),
    "context": (CONTEXT_ENV,),
}
OPTIONS = {"uri": "--uri", "db": "--db", "output": "--output", "context": "--context"}

# The keys a context may hold; a project file may also name the default context.
CONTEXT_KEYS = ("uri", "uri_env", "db", "output", "projections", "log")
PROJECT_KEYS = (*CONTEXT_KEYS, "context")
USER_KEYS = ("contexts",)


class ConfigError(InvalidInput):
    """A configuration file that cannot be used: malformed, an unknown key, a bad value, an
    unknown context (exit 2). The message names the file, the line and the key."""


@dataclass(frozen=True)
class ConfigFile:
    """One parsed configuration file: its path, its text (for line numbers) and the table that
    holds evstream's settings (the whole file, or `[tool.evstream]` of a pyproject.toml)."""

    path: Path
    text: str
    table: dict[str, Any]
    prefix: tuple[str, ...] = ()

    def line_of(self, *keys: str) -> int | None:
        """The line where a key (a path of keys below this file's table) is set."""
        return key_line(self.text, (*self.prefix, *keys))

    def error(self, message: str, *keys: str) -> ConfigError:
        """An error naming this file and the line of `keys`."""
        line = self.line_of(*keys) if keys else None
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {message}")


@dataclass
class Sources:
    """The files and context that a resolution read, for `evstream config` and for errors."""

    project: ConfigFile | None = None
    user: ConfigFile | None = None
    user_path: Path | None = None
    context: str | None = None
    context_origin: Origin | None = None
    contexts: list[str] = field(default_factory=list)


# --- finding and reading files -------------------------------------------------------------------


def user_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/evstream/config.toml`, by default under `~/.config`."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / USER_DIR / USER_FILE


def find_project_file(start: Path) -> ConfigFile | None:
    """The nearest `evstream.toml`, or `pyproject.toml` with `[tool.evstream]`, from `start` up.

    In one directory `evstream.toml` wins; a `pyproject.toml` without the table is passed over.
    """
    directory = start.absolute()
    for folder in (directory, *directory.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return read_file(candidate)
        pyproject = folder / PYPROJECT_FILE
        if pyproject.is_file():
            found = read_pyproject(pyproject)
            if found is not None:
                return found
    return None


def read_text(path: Path) -> str:
    """A configuration file's text; an unreadable one is a one-line error."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read it: {reason}") from None


def parse(path: Path, text: str) -> dict[str, Any]:
    """TOML text as a dict; a syntax error names the file and its line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)$", message)
        if found:
            message = message[: found.start()].rstrip()
            raise ConfigError(f"{path}:{found.group(1)}: not valid TOML: {message}") from None
        raise ConfigError(f"{path}: not valid TOML: {message}") from None


def read_file(path: Path) -> ConfigFile:
    """An `evstream.toml` or a user file, parsed."""
    text = read_text(path)
    return ConfigFile(path, text, parse(path, text))


def read_pyproject(path: Path) -> ConfigFile | None:
    """The `[tool.evstream]` table of a pyproject.toml; None when it has none.

    A pyproject.toml that never mentions the table is not parsed: another tool's broken file
    is not evstream's error.
    """
    text = read_text(path)
    if not re.search(r"^\s*\[\s*tool\s*\.\s*evstream\b|^\s*tool\s*\.\s*evstream\b", text, re.M):
        return None
    table: Any = parse(path, text)
    for key in PYPROJECT_TABLE:
        table = table.get(key) if isinstance(table, dict) else None
    if table is None:
        return None
    found = ConfigFile(path, text, {}, PYPROJECT_TABLE)
    if not isinstance(table, dict):
        raise found.error("[tool.evstream] must be a table", *PYPROJECT_TABLE)
    return ConfigFile(path, text, table, PYPROJECT_TABLE)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_PART = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
_ASSIGN = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", text)
    return tuple(a or b or c for a, b, c in parts)


def key_line(text: str, keys: tuple[str, ...]) -> int | None:
    """The 1-based line of a TOML file where the key path `keys` is set or its table opens.

    tomllib gives no positions, so this reads headers (`[a.b]`) and assignments (`a.b = …`),
    which is enough to point at a key; multi-line strings can fool it, never into a crash.
    """
    if not keys:
        return None
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _split_key(header.group(1))
            if table[: len(keys)] == keys:
                return number
            continue
        assign = _ASSIGN.match(line)
        if assign:
            full = table + _split_key(assign.group(1))
            if full[: len(keys)] == keys:
                return number
    return None


def check_permissions(path: Path, warn: Callable[[str], None]) -> None:
    """Warn when someone other than the owner (or root) may change a configuration file: it
    chooses which module evstream imports and which server it talks to."""
    if os.name != "posix":
        return
    try:
        info = path.stat()
    except OSError:
        return
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        warn(
            f"{path} can be changed by other users (mode {stat.filemode(info.st_mode)}); it "
            f"chooses which modules evstream imports (chmod go-w {path})"
        )
    elif info.st_uid not in (os.getuid(), 0):
        warn(
            f"{path} belongs to another user (uid {info.st_uid}); it chooses which modules "
            "evstream imports"
        )


# --- checking what a file holds ------------------------------------------------------------------


def check_keys(
    source: ConfigFile, table: Mapping[str, Any], known: tuple[str, ...], *where: str
) -> None:
    """Refuse a key this table does not know, naming its line."""
    for key in table:
        if key not in known:
            place = f" in [{'.'.join((*source.prefix, *where))}]" if where or source.prefix else ""
            raise source.error(
                f"unknown key {key!r}{place} (known: {', '.join(known)})", *where, key
            )


def check_value(source: ConfigFile, key: str, value: Any, *where: str) -> Any:
    """A setting's value from a file, of the right type, or an error naming its line."""

    def bad(expected: str) -> ConfigError:
        return source.error(f"{key} must be {expected}, not {value!r}", *where, key)

    if key in ("uri", "uri_env", "db", "context"):
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
    elif key == "output":
        if value not in OUTPUT_MODES:
            raise bad(f"one of {', '.join(OUTPUT_MODES)}")
    elif key == "projections":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad("a list of module names or paths")
        return tuple(project_path(v, source.path.parent) for v in value)
    elif key == "log" and not isinstance(value, dict):
        raise bad("a table ([log])")
    return value


def project_path(ref: str, base: Path) -> str:
    """A projection module named in a file: a relative path is relative to that file."""
    if (ref.endswith(".py") or "/" in ref or os.sep in ref) and not Path(ref).is_absolute():
        return str((base / ref).resolve())
    return ref


def layer_of(source: ConfigFile, table: Mapping[str, Any], *where: str) -> dict[str, Any]:
    """The checked settings of one file layer (the project file or one context)."""
    values = {key: check_value(source, key, value, *where) for key, value in table.items()}
    if "uri" in values and "uri_env" in values:
        raise source.error("give uri or uri_env, not both", *where, "uri_env")
    return values


# --- resolving -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """One file layer: its values and how to describe where each came from."""

    source: ConfigFile
    values: dict[str, Any]
    where: tuple[str, ...]
    context: str | None = None

    def origin(self, key: str) -> Origin:
        kind = "context" if self.context else "file"
        return Origin(
            kind,
            name=self.context,
            file=str(self.source.path),
            line=self.source.line_of(*self.where, key),
        )


def env_value(env: Mapping[str, str], key: str) -> tuple[str, str] | None:
    """(variable, value) of the first of a setting's environment variables that is set."""
    for name in ENV_VARS.get(key, ()):
        if env.get(name):
            return name, env[name]
    return None


def select_context(
    options: Mapping[str, Any],
    env: Mapping[str, str],
    project: ConfigFile | None,
    project_values: Mapping[str, Any],
) -> tuple[str, Origin] | None:
    """The chosen context's name and where the choice was made, or None."""
    if options.get("context"):
        return str(options["context"]), Origin("option", name="--context")
    if env.get(CONTEXT_ENV):
        return env[CONTEXT_ENV], Origin("env", name=CONTEXT_ENV)
    if project is not None and "context" in project_values:
        return project_values["context"], Origin(
            "file", file=str(project.path), line=project.line_of("context")
        )
    return None


def read_sources(
    options: Mapping[str, Any], env: Mapping[str, str], cwd: Path, warn: Callable[[str], None]
) -> tuple[Sources, list[_Layer]]:
    """The project file and the selected context, checked, as layers in precedence order."""
    sources = Sources()
    layers: list[_Layer] = []
    project = find_project_file(cwd)
    project_values: dict[str, Any] = {}
    if project is not None:
        check_permissions(project.path, warn)
        check_keys(project, project.table, PROJECT_KEYS)
        project_values = layer_of(project, project.table)
        sources.project = project
        layers.append(_Layer(project, project_values, ()))
    sources.user_path = user_config_path(env)
    contexts: dict[str, Any] = {}
    if sources.user_path.is_file():
        user = read_file(sources.user_path)
        check_permissions(user.path, warn)
        check_keys(user, user.table, USER_KEYS)
        contexts = user.table.get("contexts", {})
        if not isinstance(contexts, dict) or not all(
            isinstance(v, dict) for v in contexts.values()
        ):
            raise user.error("contexts must be tables: [contexts.NAME]", "contexts")
        sources.user = user
        sources.contexts = sorted(contexts)
    chosen = select_context(options, env, project, project_values)
    if chosen is not None:
        name, origin = chosen
        sources.context, sources.context_origin = name, origin
        if name not in contexts:
            known = ", ".join(sorted(contexts)) or "none"
            message = f"no context named {name!r} in {sources.user_path} (it has: {known})"
            if origin.kind == "file" and project is not None:
                raise project.error(f"context: {message}", "context")
            raise ConfigError(f"{origin.name}: {message}")
        assert sources.user is not None
        table = contexts[name]
        check_keys(sources.user, table, CONTEXT_KEYS, "contexts", name)
        values = layer_of(sources.user, table, "contexts", name)
        layers.append(_Layer(sources.user, values, ("contexts", name), context=name))
    return sources, layers


def resolve_settings(
    options: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    *,
    warn: Callable[[str], None] | None = None,
) -> Settings:
    """Settings from the options given (None or absent: not given), the environment and the
    configuration files, each setting from its first layer that has it (module docstring).

    `options` may hold uri, db, output, context (the layered settings) and debug, verbose,
    quiet, home (passed through). Bad files and unknown contexts raise `ConfigError` (exit 2);
    warnings (a file others may change) go to `warn`, else to Python's warnings.
    """
    options = dict(options or {})
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    if warn is None:

        def warn(message: str) -> None:
            warnings.warn(message, UserWarning, stacklevel=3)

    sources, layers = read_sources(options, env, cwd, warn)
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for key in ("uri", "db", "output", "projections", "log"):
        found = _resolve_one(key, options, env, layers)
        if found is not None:
            values[key], origins[key] = found
    if "uri" not in values:
        origins["uri"] = Origin("default", note="the embedded dev store")
    if "db" not in values:
        from_uri = uri_database(values.get("uri"))
        values["db"] = from_uri or DEFAULT_DB
        origins["db"] = Origin("default", note="the URI's database" if from_uri else None)
    if "output" not in values:
        values["output"], origins["output"] = "auto", Origin("default")
    if "projections" not in values:
        values["projections"], origins["projections"] = (), Origin("default")
    if "log" not in values:
        origins["log"] = Origin("default", note="evstream's own field names")
    if sources.context is not None:
        assert sources.context_origin is not None
        origins["context"] = sources.context_origin
    else:
        origins["context"] = Origin("default", note="none")
    home = options.get("home")
    if home is None and env.get("EVSTREAM_HOME"):
        home = Path(env["EVSTREAM_HOME"]).expanduser()
        origins["home"] = Origin("env", name="EVSTREAM_HOME")
    else:
        origins["home"] = Origin("option" if home is not None else "default")
    log_origin = origins["log"]
    return Settings(
        uri=values.get("uri"),
        db=values["db"],
        output=values["output"],
        debug=bool(options.get("debug", False)),
        home=Path(home) if home is not None else None,
        verbose=bool(options.get("verbose", False)),
        quiet=bool(options.get("quiet", False)),
        log=values.get("log"),
        log_source=log_origin.file if log_origin.kind != "default" else None,
        projections=tuple(values["projections"]),
        context=sources.context,
        origins=origins,
        project_file=str(sources.project.path) if sources.project else None,
        user_file=str(sources.user_path) if sources.user_path else None,
        contexts=tuple(sources.contexts),
    )


def _resolve_one(
    key: str, options: Mapping[str, Any], env: Mapping[str, str], layers: list[_Layer]
) -> tuple[Any, Origin] | None:
    """One setting's value and origin from its first layer that has it; None: the default."""
    value: Any
    if key in OPTIONS and options.get(key) is not None:  # `--db ''` is given, and refused later
        value = options[key]
        if key == "output":
            value = _output_mode(value, OPTIONS[key])
        return value, Origin("option", name=OPTIONS[key])
    from_env = env_value(env, key)
    if from_env is not None:
        name, raw = from_env
        value = raw
        if key == "output":
            value = _output_mode(raw, name)
        elif key == "projections":
            value = tuple(m.strip() for m in raw.split(",") if m.strip())
        return value, Origin("env", name=name)
    for layer in layers:
        if key == "uri" and "uri_env" in layer.values:
            variable = layer.values["uri_env"]
            origin = layer.origin("uri_env")
            if not env.get(variable):
                where = f"{layer.source.path}:{origin.line}" if origin.line else layer.source.path
                raise ConfigError(
                    f"{where}: uri_env names the environment variable {variable}, which is not set"
                )
            return env[variable], Origin(
                origin.kind, name=origin.name, file=origin.file, line=origin.line, via=variable
            )
        if key in layer.values:
            return layer.values[key], layer.origin(key)
    return None


def _output_mode(value: Any, where: str) -> str:
    mode = str(getattr(value, "value", value)).lower()
    if mode not in OUTPUT_MODES:
        raise ConfigError(
            f"{where}: {value!r} is not an output mode (one of {', '.join(OUTPUT_MODES)})"
        )
    return mode


# --- `evstream config` ---------------------------------------------------------------------------

SHOWN = ("context", "uri", "db", "output", "projections", "log", "home")


def config_report(settings: Settings) -> dict[str, Any]:
    """What `evstream config` shows: each resolved setting, passwords masked, and where it came
    from; then the files that were looked for and the contexts there are."""
    from evstream.settings import mask_uri

    values: dict[str, Any] = {
        "context": settings.context,
        "uri": mask_uri(settings.uri) if settings.uri else None,
        "db": settings.db,
        "output": settings.output,
        "projections": list(settings.projections),
        "log": settings.log,
        "home": str(settings.data_home),
    }
    rows: dict[str, Any] = {}
    for key in SHOWN:
        origin = settings.origins.get(key, Origin("default"))
        rows[key] = {"value": values[key], "source": origin.describe(), **origin.as_dict()}
    user = Path(settings.user_file) if settings.user_file else None
    return {
        "settings": rows,
        "project_file": settings.project_file,
        "user_file": settings.user_file,
        "user_file_exists": bool(user and user.is_file()),
        "contexts": list(settings.contexts),
    }
