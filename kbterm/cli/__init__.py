"""The ``kbterm`` command: a thin click layer over the headless core.

One module per group of commands (``setup``: doctor, pull, folders; ``indexing``: index,
status; ``search``: search, ask; ``watch``; ``serve``).  Library errors (:class:`~kbterm.errors.KbtermError`)
are printed as one line on stderr, without a traceback.
"""

from __future__ import annotations

import sys

import click

# (they register their commands)
from kbterm.cli import indexing, mcp, search, serve, setup, watch  # noqa: F401
from kbterm.cli.base import cli, echo
from kbterm.errors import KbtermError
from kbterm.textsafe import visible

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning kbterm errors into one line and exit code 1."""
    try:
        code = cli.main(args=argv, prog_name="kbterm", standalone_mode=False)
    except click.exceptions.Abort:
        echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.message = visible(exc.message)  # it may quote a path the user typed
        exc.show()
        sys.exit(exc.exit_code)
    except KbtermError as exc:
        echo(f"kbterm: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)
