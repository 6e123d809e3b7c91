"""Delivery through the CLI: what watch says when its reader goes away, and `--exec`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import Cli, write_numbered_events


def fill_log(cli: Cli, tmp_path: Path, total: int = 3000) -> None:
    path = write_numbered_events(tmp_path / "log.ndjson", total, 30)
    r = cli("publish", "--file", str(path), "-o", "json")
    assert r.exit_code == 0, r.stderr


def read_then_close(cli: Cli, *args: str, lines: int = 3) -> tuple[int, str]:
    """Run watch, read a few lines of its stdout and go away, as `| head -3` does."""
    proc = cli.popen("watch", "--from", "start", "--idle-timeout", "20", "-o", "json", *args,
                     stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    for _ in range(lines):
        assert proc.stdout.readline()
    proc.stdout.close()  # more than a pipe buffer is still to come: the next write fails
    code = proc.wait(60)
    err = proc.stderr.read()
    proc.stderr.close()
    return code, err


def test_a_reader_that_goes_away_from_a_checkpointed_watch_is_reported(
    cli: Cli, tmp_path: Path
) -> None:
    fill_log(cli, tmp_path)
    code, err = read_then_close(cli, "--checkpoint", "mailer")
    assert code == 1, err
    assert "the reader of stdout went away" in err and "--exec" in err
    assert "Traceback" not in err


def test_head_without_a_checkpoint_stays_quiet(cli: Cli, tmp_path: Path) -> None:
    fill_log(cli, tmp_path)
    code, err = read_then_close(cli)
    assert code == 0, err
    assert "error" not in err and "Traceback" not in err
