"""docs/cli-reference.md is what `docs/generate_reference.py` writes from the CLI's own --help:
an option added, renamed or reworded without regenerating it fails here."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generator():
    spec = importlib.util.spec_from_file_location(
        "generate_reference", ROOT / "docs" / "generate_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "cli-reference.md").read_text(encoding="utf-8")
    assert committed == generator().reference(), (
        "docs/cli-reference.md is out of date: run python docs/generate_reference.py"
    )


def test_the_reference_has_every_command_and_its_options() -> None:
    text = generator().reference()
    for heading in ("## evstream publish", "## evstream watch", "## evstream server logs"):
        assert heading in text
    assert "--expected-version" in text and "--partition I/N" in text
