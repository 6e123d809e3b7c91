"""Configuration files and contexts: every layer of the precedence for every setting, the files
found the way ruff finds its own, and a bad file as one line naming the file, line and key."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from evstream.config import (
    ConfigError,
    config_report,
    find_project_file,
    key_line,
    resolve_settings,
)
from evstream.errors import ExitCode, InvalidInput
from evstream.output import config_view
from evstream.projections import BUILTIN_MODULES, load_projection, modules_to_load


class World:
    """A project directory, a user config directory and an environment, for one test."""

    def __init__(self, root: Path) -> None:
        self.project = root / "project"
        self.cwd = self.project / "src" / "deep"
        self.cwd.mkdir(parents=True)
        self.config_home = root / "xdg"
        self.env: dict[str, str] = {"XDG_CONFIG_HOME": str(self.config_home)}

    @property
    def user_file(self) -> Path:
        return self.config_home / "evstream" / "config.toml"

    def write_project(self, text: str, name: str = "evstream.toml") -> Path:
        path = self.project / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    def write_user(self, text: str) -> Path:
        self.user_file.parent.mkdir(parents=True, exist_ok=True)
        self.user_file.write_text(text)
        self.user_file.chmod(0o600)
        return self.user_file

    def resolve(self, warnings: list[str] | None = None, **options: Any) -> Any:
        return resolve_settings(
            options,
            self.env,
            self.cwd,
            warn=(warnings.append if warnings is not None else _no_warning),
        )


def _no_warning(message: str) -> None:
    raise AssertionError(f"unexpected warning: {message}")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# One row per setting: (key, option value, env var and value, project value as TOML, context
# value as TOML, what each resolves to, the default).
LAYERS = [
    (
        "uri",
        "mongodb://option/",
        ("EVSTREAM_URI", "mongodb://env/"),
        '"mongodb://project/"',
        '"mongodb://context/"',
        ["mongodb://option/", "mongodb://env/", "mongodb://project/", "mongodb://context/"],
        None,
    ),
    (
        "db",
        "opt",
        ("EVSTREAM_DB", "envdb"),
        '"projdb"',
        '"ctxdb"',
        ["opt", "envdb", "projdb", "ctxdb"],
        "evstream",
    ),
    (
        "output",
        "json",
        ("EVSTREAM_OUTPUT", "pretty"),
        '"json"',
        '"pretty"',
        ["json", "pretty", "json", "pretty"],
        "auto",
    ),
    (
        "projections",
        None,  # no global option: --module adds one module per command
        ("EVSTREAM_PROJECTIONS", "env_a, env_b"),
        '["proj_mod"]',
        '["ctx_mod"]',
        [None, ("env_a", "env_b"), ("proj_mod",), ("ctx_mod",)],
        (),
    ),
]


@pytest.mark.parametrize(
    ("key", "option", "env", "project", "context", "wins", "default", "top"),
    [
        (*row, top)
        for row in LAYERS
        for top in ("option", "env", "project", "context", "default")
        if top != "option" or row[1] is not None  # projections: no global option
    ],
)
def test_each_layer_beats_the_ones_below(
    world: World,
    key: str,
    option: Any,
    env: tuple[str, str],
    project: str,
    context: str,
    wins: list[Any],
    default: Any,
    top: str,
) -> None:
    """With every layer from `top` down set, the value comes from `top`, and says so."""
    order = ["option", "env", "project", "context", "default"]
    present = order[order.index(top) :]
    world.write_user(f"[contexts.dev]\n{key} = {context}\n" if "context" in present else "")
    if "project" in present:
        world.write_project(f'context = "dev"\n{key} = {project}\n')
    elif "context" in present:
        world.env["EVSTREAM_CONTEXT"] = "dev"
    if "env" in present:
        world.env[env[0]] = env[1]
    options = {key: option} if "option" in present and option is not None else {}
    settings = world.resolve(**options)
    value = getattr(settings, key)
    origin = settings.origins[key]
    if top == "default":
        assert value == default
        assert origin.kind == "default"
        return
    assert value == wins[order.index(top)]
    assert origin.kind == {"project": "file"}.get(top, top)
    if top == "option":
        assert origin.describe() == f"option --{key}"
    elif top == "env":
        assert origin.describe() == f"env {env[0]}"
    elif top == "project":
        assert origin.describe() == f"file {world.project / 'evstream.toml'}:2"
    else:
        assert origin.describe() == f"context dev ({world.user_file}:2)"


def test_log_table_from_project_file_names_its_source(world: World) -> None:
    world.write_user('[contexts.dev.log]\ncollection = "ctx_events"\n')
    path = world.write_project(
        'context = "dev"\n\n[log]\ncollection = "domain_events"\nstream = "aggregateId"\n'
    )
    settings = world.resolve()
    assert settings.log == {"collection": "domain_events", "stream": "aggregateId"}
    assert settings.log_source == str(path)
    assert settings.origins["log"].describe() == f"file {path}:3"
    assert settings.context == "dev"


def test_log_table_from_context(world: World) -> None:
    world.write_user('[contexts.dev.log]\ncollection = "ctx_events"\n')
    world.env["EVSTREAM_CONTEXT"] = "dev"
    settings = world.resolve()
    assert settings.log == {"collection": "ctx_events"}
    assert settings.log_source == str(world.user_file)
    assert settings.origins["log"].kind == "context"


def test_nothing_configured_gives_the_defaults(world: World) -> None:
    settings = world.resolve()
    assert (settings.uri, settings.db, settings.output) == (None, "evstream", "auto")
    assert (settings.projections, settings.log, settings.log_source, settings.context) == (
        (),
        None,
        None,
        None,
    )
    assert settings.origins["uri"].describe() == "default (the embedded dev store)"
    assert settings.project_file is None


def test_db_defaults_to_the_uri_database_whichever_layer_gave_the_uri(world: World) -> None:
    world.write_user('[contexts.prod]\nuri = "mongodb://h/shop?replicaSet=rs0"\n')
    settings = world.resolve(context="prod")
    assert settings.db == "shop"
    assert settings.origins["db"].describe() == "default (the URI's database)"
    world.write_project('db = "other"\n')
    assert world.resolve(context="prod").db == "other"


def test_uri_env_reads_the_named_variable(world: World) -> None:
    world.write_user('[contexts.prod]\nuri_env = "PROD_MONGO"\n')
    world.env["PROD_MONGO"] = "mongodb://u:secret@prod/app"
    settings = world.resolve(context="prod")
    assert settings.uri == "mongodb://u:secret@prod/app"
    assert settings.db == "app"
    described = settings.origins["uri"].describe()
    assert described == f"context prod ({world.user_file}:2, through $PROD_MONGO)"
    assert "secret" not in described


def test_uri_env_unset_is_one_line_naming_file_and_line(world: World) -> None:
    path = world.write_project('db = "x"\nuri_env = "NOT_SET_ANYWHERE"\n')
    with pytest.raises(ConfigError) as caught:
        world.resolve()
    assert caught.value.exit_code == ExitCode.USAGE
    assert str(caught.value) == (
        f"{path}:2: uri_env names the environment variable NOT_SET_ANYWHERE, which is not set"
    )


def test_context_from_option_beats_env_beats_project_default(world: World) -> None:
    world.write_user('[contexts.a]\ndb = "a"\n[contexts.b]\ndb = "b"\n[contexts.c]\ndb = "c"\n')
    world.write_project('context = "c"\n')
    assert world.resolve().db == "c"
    world.env["EVSTREAM_CONTEXT"] = "b"
    assert world.resolve().db == "b"
    settings = world.resolve(context="a")
    assert settings.db == "a"
    assert settings.origins["context"].describe() == "option --context"
    assert settings.contexts == ("a", "b", "c")


# --- finding the project file --------------------------------------------------------------------


def test_project_file_found_from_a_subdirectory(world: World) -> None:
    path = world.write_project('db = "found"\n')
    found = find_project_file(world.cwd)
    assert found is not None and found.path == path


def test_pyproject_tool_table_is_used_when_there_is_no_evstream_toml(world: World) -> None:
    path = world.write_project(
        '[project]\nname = "x"\n\n[tool.evstream]\ndb = "py"\n\n[tool.evstream.log]\n'
        'stream = "userId"\n',
        name="pyproject.toml",
    )
    settings = world.resolve()
    assert settings.db == "py"
    assert settings.origins["db"].describe() == f"file {path}:5"
    assert settings.log == {"stream": "userId"}
    assert settings.log_source == str(path)


def test_evstream_toml_beats_pyproject_in_the_same_directory(world: World) -> None:
    world.write_project('[tool.evstream]\ndb = "py"\n', name="pyproject.toml")
    world.write_project('db = "toml"\n')
    assert world.resolve().db == "toml"


def test_nearest_wins_and_a_pyproject_without_the_table_is_passed_over(world: World) -> None:
    world.write_project('db = "outer"\n')
    (world.cwd / "pyproject.toml").write_text("[project\nthis is not even TOML")
    assert world.resolve().db == "outer"
    (world.project / "src" / "evstream.toml").write_text('db = "inner"\n')
    assert world.resolve().db == "inner"


def test_relative_projection_paths_are_relative_to_the_file(world: World) -> None:
    world.write_project('projections = ["models/carts.py", "shop.projections"]\n')
    settings = world.resolve()
    assert settings.projections == (str(world.project / "models" / "carts.py"), "shop.projections")
    assert modules_to_load("extra.py", configured=settings.projections) == [
        *BUILTIN_MODULES,
        str(world.project / "models" / "carts.py"),
        "shop.projections",
        "extra.py",
    ]


def test_rebuild_loads_a_projection_named_in_the_project_file(world: World) -> None:
    models = world.project / "models"
    models.mkdir()
    shutil.copy(Path(__file__).parent / "projections" / "carts.py", models / "carts.py")
    world.write_project('projections = ["models/carts.py"]\n')
    settings = world.resolve()  # from a subdirectory: the path is the file's, not the cwd's
    assert load_projection("carts", configured=settings.projections).collection == "carts"
    with pytest.raises(InvalidInput) as caught:
        load_projection("carts", configured=())
    assert "in the projections of evstream.toml" in caught.value.line()


def test_modules_to_load_without_configuration_reads_the_variable() -> None:
    env = {"EVSTREAM_PROJECTIONS": "a, b"}
    assert modules_to_load(None, env) == [*BUILTIN_MODULES, "a", "b"]
    assert modules_to_load(None, env, configured=()) == [*BUILTIN_MODULES]


# --- bad files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "text", "message"),
    [
        ("project", 'db = "x"\nurl = "mongodb://h"\n', "{path}:2: unknown key 'url'"),
        ("project", 'db = "x"\n\n[logs]\nstream = "a"\n', "{path}:3: unknown key 'logs'"),
        ("project", 'db = "x"\noutput = "yaml"\n', "{path}:2: output must be one of"),
        ("project", "db = 3\n", "{path}:1: db must be a non-empty string, not 3"),
        ("project", "projections = [1]\n", "{path}:1: projections must be a list"),
        ("project", 'log = "x"\n', "{path}:1: log must be a table"),
        ("project", 'uri = "mongodb://a"\nuri_env = "B"\n', "{path}:2: give uri or uri_env"),
        ("project", 'db = "x"\ndb = "y"\n', "{path}:2: not valid TOML: Cannot overwrite a value"),
        ("project", 'db = "x\n', "{path}:1: not valid TOML: "),
        (
            "pyproject",
            '[tool.evstream]\ndb = "x"\nuri_envv = "Y"\n',
            "{path}:3: unknown key 'uri_envv' in [tool.evstream]",
        ),
        ("user", '[contexts.prod]\ndb = "x"\n\n[context.dev]\n', "{path}:4: unknown key 'context'"),
        (
            "user",
            '[contexts.prod]\ndb = "x"\nhost = "y"\n',
            "{path}:3: unknown key 'host' in [contexts.prod]",
        ),
        ("user", "contexts = 3\n", "{path}:1: contexts must be tables"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_line_and_key(
    world: World, where: str, text: str, message: str
) -> None:
    if where == "user":
        path = world.write_user(text)
        world.env["EVSTREAM_CONTEXT"] = "prod"
    else:
        path = world.write_project(
            text, name="pyproject.toml" if where == "pyproject" else "evstream.toml"
        )
    with pytest.raises(ConfigError) as caught:
        world.resolve()
    line = caught.value.line()
    assert line.startswith(message.format(path=path)), line
    assert "\n" not in line
    assert caught.value.exit_code == ExitCode.USAGE


def test_unknown_context_names_where_it_was_chosen(world: World) -> None:
    world.write_user('[contexts.dev]\ndb = "d"\n[contexts.prod]\ndb = "p"\n')
    with pytest.raises(ConfigError) as caught:
        world.resolve(context="staging")
    assert str(caught.value) == (
        f"--context: no context named 'staging' in {world.user_file} (it has: dev, prod)"
    )
    world.env["EVSTREAM_CONTEXT"] = "stage"
    with pytest.raises(ConfigError, match=r"^EVSTREAM_CONTEXT: no context named 'stage'"):
        world.resolve()
    del world.env["EVSTREAM_CONTEXT"]
    path = world.write_project('db = "x"\ncontext = "qa"\n')
    with pytest.raises(ConfigError) as caught:
        world.resolve()
    assert str(caught.value).startswith(f"{path}:2: context: no context named 'qa'")


def test_unknown_context_without_a_user_file(world: World) -> None:
    with pytest.raises(ConfigError, match=r"\(it has: none\)$"):
        world.resolve(context="prod")


def test_bad_output_in_the_environment_is_a_usage_error(world: World) -> None:
    world.env["EVSTREAM_OUTPUT"] = "yaml"
    with pytest.raises(ConfigError, match="^EVSTREAM_OUTPUT: 'yaml' is not an output mode"):
        world.resolve()


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646])
def test_a_file_others_can_change_gets_a_warning(world: World, mode: int) -> None:
    path = world.write_project('projections = ["shop.projections"]\n')
    path.chmod(mode)
    warnings: list[str] = []
    settings = world.resolve(warnings)
    assert settings.projections == ("shop.projections",)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path} can be changed by other users")
    assert "imports" in warnings[0]


def test_a_private_file_gets_no_warning(world: World) -> None:
    world.write_user('[contexts.a]\ndb = "a"\n')
    world.write_project('db = "x"\n')
    world.resolve()  # _no_warning raises on any


# --- key_line ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "line"),
    [
        (("db",), 1),
        (("contexts", "prod"), 3),
        (("contexts", "prod", "uri"), 4),
        (("contexts", "prod", "log"), 6),
        (("contexts", "prod", "log", "stream"), 7),
        (("tool", "evstream"), 8),
        (("tool", "evstream", "db"), 9),
        (("missing",), None),
    ],
)
def test_key_line(keys: tuple[str, ...], line: int | None) -> None:
    text = (
        'db = "x"  # comment\n'
        "\n"
        "[contexts.prod]\n"
        'uri = "mongodb://h"\n'
        "\n"
        '[contexts."prod".log]\n'
        'stream = "aggregateId"\n'
        "[tool . evstream]\n"
        'db = "y"\n'
    )
    assert key_line(text, keys) == line


# --- evstream config -----------------------------------------------------------------------------


def test_config_report_shows_each_value_and_its_source_with_passwords_masked(world: World) -> None:
    world.write_user('[contexts.prod]\nuri_env = "PROD"\ndb = "shop"\n')
    world.write_project('context = "prod"\noutput = "json"\n[log]\nstream = "userId"\n')
    world.env.update(PROD="mongodb://app:s3cret@db1/x", EVSTREAM_HOME="/tmp/h")
    report = config_report(world.resolve())
    rows = report["settings"]
    assert list(rows) == ["context", "uri", "db", "output", "projections", "log", "home"]
    project, user = world.project / "evstream.toml", world.user_file
    assert {key: (row["value"], row["source"]) for key, row in rows.items()} == {
        "context": ("prod", f"file {project}:1"),
        "uri": ("mongodb://app:****@db1/x", f"context prod ({user}:2, through $PROD)"),
        "db": ("shop", f"context prod ({user}:3)"),
        "output": ("json", f"file {project}:2"),
        "projections": ([], "default"),
        "log": ({"stream": "userId"}, f"file {project}:3"),
        "home": ("/tmp/h", "env EVSTREAM_HOME"),
    }
    assert rows["uri"]["kind"] == "context" and rows["uri"]["via"] == "PROD"
    assert (report["project_file"], report["user_file"]) == (str(project), str(user))
    assert report["contexts"] == ["prod"] and report["user_file_exists"] is True
    assert "s3cret" not in json.dumps(report)
    shown = render(config_view(report))
    assert "s3cret" not in shown
    assert (
        f"uri          mongodb://app:****@db1/x  ← context prod ({user}:2, through $PROD)" in shown
    )
    assert "projections  (none)  ← default" in shown
    assert f"user file     {user} · contexts: prod" in shown


def test_config_report_with_nothing_configured(world: World) -> None:
    report = config_report(world.resolve())
    sources = {key: row["source"] for key, row in report["settings"].items()}
    assert sources["uri"] == "default (the embedded dev store)"
    assert sources["context"] == "default (none)"
    assert report["project_file"] is None and report["user_file_exists"] is False
    assert "(none found)" in render(config_view(report))


def render(renderable: object) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_python_api_resolves_as_the_cli_does(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evstream.connect(uri, db, context=)` calls settings.resolve_settings: the same layers."""
    from evstream.settings import resolve_settings as for_connect

    world.write_user('[contexts.prod]\nuri = "mongodb://prod/shop"\n')
    world.write_project('output = "json"\n')
    monkeypatch.chdir(world.cwd)
    settings = for_connect(context="prod", env=world.env)
    assert (settings.uri, settings.db, settings.output) == ("mongodb://prod/shop", "shop", "json")
    assert for_connect("mongodb://other/", "x", context="prod", env=world.env).db == "x"
    with pytest.raises(ConfigError, match="no context named 'qa'"):
        for_connect(context="qa", env=world.env)
