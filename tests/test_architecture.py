"""docs/architecture.md, the package map for newcomers, names every module of evstream/ and
nothing that is gone: a new module is placed on the map when it is added."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "architecture.md"
NAMED = re.compile(r"`(evstream/[\w/]+\.py)`")


def modules() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "evstream").rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_every_module_is_on_the_package_map() -> None:
    named = set(NAMED.findall(MAP.read_text(encoding="utf-8")))
    missing = sorted(modules() - named)
    assert missing == [], f"add these modules to docs/architecture.md, in their layer: {missing}"


def test_the_package_map_names_no_module_that_is_gone() -> None:
    named = set(NAMED.findall(MAP.read_text(encoding="utf-8")))
    gone = sorted(named - modules())
    assert gone == [], f"docs/architecture.md names modules that do not exist: {gone}"
