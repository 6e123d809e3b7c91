"""What every command runs in: its Env (settings, output, a lazily opened store), and `running`,
which turns evstream's errors into one stderr line and their exit code."""

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

from evstream.errors import EvstreamError, ExitCode, Interrupted
from evstream.interrupts import CTRL_C
from evstream.settings import Settings, scrub

if TYPE_CHECKING:
    from evstream.storage import Store
    from evstream.writer import Output


@dataclass
class Env:
    """What every command gets: resolved settings, the output, and a lazily opened store."""

    settings: Settings
    # Said (and exit 1) if the reader of stdout goes away: set by a command for which that
    # loses something, as watch --checkpoint does (docs/delivery.md).
    broken_pipe: str | None = None
    _output: "Output | None" = None
    _store: "Store | None" = field(default=None, repr=False)

    @property
    def output(self) -> "Output":
        """The output of this invocation."""
        if self._output is None:
            from evstream.writer import Output  # not evstream.output: no rich for JSON lines

            self._output = Output(self.settings.output, quiet=self.settings.quiet)
        return self._output

    def store(self, *, verify: bool = True) -> "Store":
        """Connect (starting the embedded dev store if no URI is configured); `verify`: refuse
        a field map whose paths the log's documents lack (`evstream init` asks without)."""
        if self._store is None:
            from evstream.storage import connect

            self._store = connect(
                self.settings, self.output.notice, self.output.warning, verify=verify
            )
        return self._store

    def close(self, *, interrupted: bool = False) -> None:
        """Release the connection; after Ctrl-C, leave it to the process's exit.

        Closing a client ends its server sessions first, which waits for a server for up to
        the server-selection timeout (30 s) when none answers: Ctrl-C while a watch rides out
        an outage would take that long. The operating system closes the sockets at exit.
        """
        if self._store is not None:
            if interrupted:
                self._store.abandon()
            else:
                self._store.close()


@contextlib.contextmanager
def running(ctx: typer.Context) -> Iterator[Env]:
    """Run a command body: evstream errors → one stderr line and their exit code."""
    env: Env = ctx.obj
    interrupted = False
    try:
        from evstream.storage import translate_errors

        with translate_errors(env.settings.uri):
            yield env
    except Interrupted as exc:
        interrupted = True
        env.output.notice(exc.line())
        raise typer.Exit(exc.exit_code) from None
    except EvstreamError as exc:
        if env.settings.debug:
            raise
        env.output.error(scrub(exc.line(), env.settings.uri))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (evstream.interrupts): 130 or 143
        interrupted = True
        raise typer.Exit(CTRL_C.exit_code) from None
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other Unix tools do, unless the
        # command said that this loses something.
        with contextlib.suppress(OSError):
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115
        if env.broken_pipe:
            env.output.error(env.broken_pipe)
            raise typer.Exit(ExitCode.UNEXPECTED) from None
        raise typer.Exit(ExitCode.OK) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if env.settings.debug:
            raise
        message = scrub(f"{type(exc).__name__}: {exc}", env.settings.uri)
        env.output.error(f"unexpected {message} (run with --debug for the traceback)")
        raise typer.Exit(ExitCode.UNEXPECTED) from None
    finally:
        env.close(interrupted=interrupted)
