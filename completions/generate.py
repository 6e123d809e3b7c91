"""Write evstream's shell completion scripts (bash, zsh, fish) into this directory.

They come from Typer's own completion machinery, the same text that
`evstream --show-completion` prints, so they stay in step with the CLI; tests/test_completions.py
fails when a committed script drifts from it.

    python completions/generate.py            # rewrite the scripts
    python completions/generate.py --check    # exit 1 if any script is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "evstream"
SHELLS = ("bash", "zsh", "fish")
HERE = Path(__file__).resolve().parent


def complete_var(prog: str = PROG) -> str:
    """The environment variable that switches the CLI into completion mode, as Click names it."""
    return "_{}_COMPLETE".format(prog.replace("-", "_").upper())


def script(shell: str, prog: str = PROG) -> str:
    """The completion script for one shell, as `evstream --show-completion SHELL` prints it."""
    from typer._completion_shared import get_completion_script  # noqa: TID251 - a CLI tool

    return (
        get_completion_script(prog_name=prog, complete_var=complete_var(prog), shell=shell) + "\n"
    )


def path_for(shell: str, directory: Path = HERE) -> Path:
    """Where a shell's script lives: completions/evstream.<shell>."""
    return directory / f"{PROG}.{shell}"


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the scripts; exit 1 when --check finds one out of date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report scripts that drifted")
    parser.add_argument("--dir", type=Path, default=HERE, help="where the scripts live")
    args = parser.parse_args(argv)
    stale = []
    for shell in SHELLS:
        target = path_for(shell, args.dir)
        wanted = script(shell)
        current = target.read_text() if target.exists() else None
        if current == wanted:
            continue
        stale.append(target)
        if not args.check:
            target.write_text(wanted)
            print(f"wrote {target}")
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(f"out of date: {names} (run python completions/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
