"""The ``kbterm`` command: a thin click layer over the headless core.

Nothing heavy is imported at module level, so ``kbterm --help`` is instant and never loads torch;
each command imports what it needs.  Library errors (:class:`~kbterm.errors.KbtermError`) are
printed as one line on stderr, without a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from kbterm import __version__
from kbterm.errors import KbtermError


class State:
    """Per-invocation state: the config is read on first use."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Any = None

    @property
    def config(self) -> Any:
        if self._config is None:
            from kbterm.config import load_config

            self._config = load_config(self.config_path)
        return self._config


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file (default: $KBTERM_CONFIG, else the platform config path).")
@click.option("-v", "--verbose", is_flag=True, help="Log what kbterm is doing to stderr.")
@click.version_option(__version__, prog_name="kbterm")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """kbterm: search and ask your own files (text, PDFs, images, video) from the terminal."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = State(config_path)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--load", "load", is_flag=True,
              help="Also load each model and run one small inference with it.")
@click.pass_obj
def doctor(state: State, as_json: bool, load: bool) -> None:
    """Show the configured models, whether each is downloaded, and where they would run."""
    from kbterm.doctor import check_loading, diagnose, render

    report = diagnose(state.config)
    checks = check_loading(state.config) if load else []
    if as_json:
        data = report.to_dict()
        if load:
            data["load"] = [c.__dict__ for c in checks]
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(render(report))
        if load:
            click.echo("\nload check")
            for c in checks:
                click.echo(f"  {c.role:<10} {'ok' if c.ok else 'error'}: {c.detail}")
    if any(not c.ok for c in checks):
        raise SystemExit(1)


@cli.command()
@click.argument("roles", nargs=-1, type=click.Choice(["embedder", "reranker", "generator", "all"]))
@click.pass_obj
def pull(state: State, roles: tuple[str, ...]) -> None:
    """Download the configured models (all three by default), with progress bars."""
    from kbterm.models.registry import model_spec
    from kbterm.models.runtime import ROLES, download_model, is_local_spec

    wanted = ROLES if not roles or "all" in roles else tuple(r for r in ROLES if r in roles)
    for role in wanted:
        spec = model_spec(state.config, role)
        if is_local_spec(spec.model):
            click.echo(f"{role}: {spec.model} is a local folder, nothing to download")
            continue
        click.echo(f"{role}: fetching {spec.model} from {spec.source}", err=True)
        path = download_model(spec.model, role, source=spec.source)
        click.echo(f"{role}: {path}")


class _Progress:
    """The progress bar of ``kbterm index`` (rich, on stderr; silent when not a terminal)."""

    PHASES = {"scan": "scanning folders", "check": "checking changes", "index": "indexing"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.console import Console
            from rich.table import Column
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<17}"),
                BarColumn(bar_width=30),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>9}"),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("[dim]{task.fields[current]}",
                           table_column=Column(no_wrap=True, overflow="ellipsis")),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
        return self

    def __call__(self, phase: str, done: int, total: int, current: str) -> None:
        if self._progress is None:
            return
        task = self._tasks.get(phase)
        if task is None:
            task = self._tasks[phase] = self._progress.add_task(
                self.PHASES.get(phase, phase), total=total or None, rate="", current="")
        t = self._progress.tasks[task]
        rate = ""
        if t.elapsed and done:
            rate = f"{done / t.elapsed:.1f} files/s"
        name = current.rsplit("/", 1)[-1] if current else ""
        self._progress.update(task, completed=done, total=total or None, rate=rate,
                              current=name.replace("\n", " "))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--rebuild", is_flag=True,
              help="Delete the index and embed everything again (after changing the model).")
@click.option("--retry-failed", is_flag=True, help="Try files that failed before again.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_obj
def index(state: State, paths: tuple[str, ...], rebuild: bool, retry_failed: bool,
          as_json: bool, no_progress: bool) -> None:
    """Index PATHS (default: the folders in the config): only what changed is embedded."""
    from kbterm.indexer import Indexer

    show = not no_progress and not as_json and sys.stderr.isatty()
    summary = None
    with _Progress(show) as progress:
        indexer = Indexer(state.config, progress=progress)
        try:
            summary = indexer.run(list(paths) or None, rebuild=rebuild,
                                  retry_failed=retry_failed)
        except KeyboardInterrupt:
            click.echo("interrupted: finished files are saved; run again to continue", err=True)
            raise SystemExit(130)
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps(asdict(summary), indent=2))
        return
    for path, reason in summary.failures[:20]:
        click.echo(f"failed: {path}: {reason}", err=True)
    if len(summary.failures) > 20:
        click.echo(f"... and {len(summary.failures) - 20} more (kbterm status)", err=True)
    click.echo(summary.line())
    problems = len(summary.failures) + len(summary.warnings)
    if problems:
        click.echo(f"{problems} warning(s): see `kbterm status`", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--all", "show_all", is_flag=True, help="List every failure.")
@click.pass_obj
def status(state: State, as_json: bool, show_all: bool) -> None:
    """Files and chunks in the index, per type and status, and what failed."""
    from kbterm.status import collect, render

    report = collect(state.config)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(render(report, max_failures=10**9 if show_all else 20))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning kbterm errors into one line and exit code 1."""
    try:
        code = cli.main(args=argv, prog_name="kbterm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KbtermError as exc:
        click.echo(f"kbterm: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)
