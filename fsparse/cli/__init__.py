"""The ``fsparse`` command line: ``sparsify``, ``inspect`` and ``demo``.

Every failure is reported as one line on stderr with a non-zero exit status:
2 for a usage error (bad option or argument), 1 for anything else, and
128 + the signal number when SIGINT (130), SIGTERM (143) or SIGHUP (129) ends
it, after removing any temporary file. Set ``FSPARSE_DEBUG=1`` to get the
traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import click

from fsparse.cli import demo, inspection, sparsify_command
from fsparse.cli.signals import Interrupted, exit_status, handled_signals

__all__ = ["cli", "main"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _OneLineErrors(click.Group):
    """A click group that turns every exception into a one-line message and exit status."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        prog = prog_name or "fsparse"
        try:
            with handled_signals():
                code = super().main(args, prog, complete_var, False, **extra)
            sys.exit(code if isinstance(code, int) else 0)
        except Interrupted as err:
            click.echo(f"{prog}: interrupted by {err.name}", err=True)
            sys.exit(exit_status(err.signum))
        except click.UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # `fsparse` alone: show the help
                err.show()
                sys.exit(err.exit_code)
            where = err.ctx.command_path if err.ctx is not None else prog
            hint = f" (see '{where} --help')"
            click.echo(f"{where}: error: {_one_line(err.format_message())}{hint}", err=True)
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo(f"{prog}: error: {_one_line(err.format_message())}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo(f"{prog}: aborted", err=True)
            sys.exit(exit_status(signal.SIGINT))  # Ctrl-C: 130, as a shell reports it
        except (ValueError, TypeError, OSError, KeyError) as err:
            if os.environ.get("FSPARSE_DEBUG"):
                raise
            message = err.args[0] if isinstance(err, KeyError) and err.args else err
            if isinstance(err, OSError) and err.strerror:
                message = f"{err.filename or ''}: {err.strerror}".lstrip(": ")
            click.echo(f"{prog}: error: {_one_line(str(message))}", err=True)
            sys.exit(1)
        except Exception as err:
            if os.environ.get("FSPARSE_DEBUG"):
                raise
            click.echo(
                f"{prog}: internal error: {type(err).__name__}: {_one_line(str(err))} "
                "(set FSPARSE_DEBUG=1 for the traceback)",
                err=True,
            )
            sys.exit(1)


@click.group(
    "fsparse", cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="fsparse", prog_name="fsparse")
def cli() -> None:
    """fsparse: functional data sparsification for PyTorch checkpoints and models."""


cli.add_command(sparsify_command.command)
cli.add_command(inspection.command)
cli.add_command(demo.command)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (the ``fsparse`` console script) on ``argv`` or ``sys.argv``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="fsparse")
