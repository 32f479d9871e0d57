"""The ``kbterm`` click group, its per-invocation state, and the one way it prints.

Nothing heavy is imported here, so ``kbterm --help`` is instant and never loads torch; each
command imports what it needs.  Everything a command prints for people goes through
:func:`echo`, which shows control characters from file names and contents as visible escapes
(:mod:`kbterm.textsafe`); ``--json`` output goes through :func:`echo_json`, exact and escaped
the JSON way.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from kbterm import __version__
from kbterm.textsafe import json_dumps, visible


class State:
    """Per-invocation state: the config is read on first use."""

    def __init__(self, config_path: str | None, verbose: bool = False) -> None:
        self.config_path = config_path
        self.verbose = verbose
        self._config: Any = None

    @property
    def config(self) -> Any:
        if self._config is None:
            from kbterm.config import load_config

            self._config = load_config(self.config_path)
        return self._config


def echo(text: object = "", err: bool = False, nl: bool = True) -> None:
    """Print ``text`` for a person, control characters escaped."""
    click.echo(visible(text), err=err, nl=nl)


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON (exact; no raw control character reaches the terminal)."""
    click.echo(json_dumps(data, indent=2))


class SafeLogFilter(logging.Filter):
    """Escapes control characters in log messages (they name files and quote errors)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = visible(message), None
        return True


def configure_logging(verbose: bool) -> None:
    """Log to stderr (warnings, or everything with ``-v``), messages escaped.  Python
    warnings from libraries go to the log too, shown only with ``-v``: a user's terminal is
    no place for a dependency's deprecation notice."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(SafeLogFilter())
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.ERROR)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file (default: $KBTERM_CONFIG, else the platform config path).")
@click.option("-v", "--verbose", is_flag=True, help="Log what kbterm is doing to stderr.")
@click.version_option(__version__, prog_name="kbterm")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """kbterm: search and ask your own files (text, PDFs, images, video) from the terminal."""
    configure_logging(verbose)
    ctx.obj = State(config_path, verbose)
    if ctx.invoked_subcommand is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            click.echo(ctx.get_help())  # not a terminal: the app cannot run; say what can
            return
        from kbterm.tui.app import run

        run(ctx.obj.config)
