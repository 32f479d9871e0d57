"""Building the index: ``kbterm index`` (with its progress bar) and ``kbterm status``."""

from __future__ import annotations

import sys
from typing import Any

import click

from kbterm.cli.base import State, cli, echo, echo_json
from kbterm.errors import BackendUnavailable, KbtermError
from kbterm.textsafe import one_line


class IndexProgress:
    """The progress bars of ``kbterm index`` (rich, on stderr; silent when not a terminal):
    one per phase (scan, check, index files) and one within the file being indexed (pages of
    a PDF, segments of a video), each with its rate and ETA."""

    PHASES = {"scan": "scanning folders", "check": "checking changes", "index": "indexing text",
              "pictures": "indexing pictures", "file": "  within file",
              "keywords": "keyword index"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._file = ""

    def __enter__(self) -> "IndexProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.table import Column

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<17}"),
                BarColumn(bar_width=30),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>11}"),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("[dim]{task.fields[current]}", markup=True,
                           table_column=Column(no_wrap=True, overflow="ellipsis")),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
        return self

    def __call__(self, phase: str, done: int, total: int, current: str) -> None:
        if self._progress is None:
            return
        from rich.markup import escape

        if phase in ("index", "pictures") and current != self._file:
            self._file = current
            self._drop("file")  # a new file: its own bar starts again
        task = self._tasks.get(phase)
        if task is None:
            task = self._tasks[phase] = self._progress.add_task(
                self.PHASES.get(phase, phase), total=total or None, rate="", current="")
        t = self._progress.tasks[task]
        rate = ""
        if t.elapsed and done:
            per_s = done / t.elapsed
            unit = {"file": "units", "keywords": "chunks"}.get(phase, "files")
            rate = f"{per_s:.1f} {unit}/s" if per_s >= 0.1 else f"{per_s * 60:.1f} {unit}/min"
        name = current.rsplit("/", 1)[-1] if current else ""
        if phase == "file":
            name = current  # "page 12 of 285", said by the indexer
        self._progress.update(task, completed=done, total=total or None, rate=rate,
                              current=escape(one_line(name.replace("\n", " "))))

    def _drop(self, phase: str) -> None:
        task = self._tasks.pop(phase, None)
        if task is not None:
            self._progress.remove_task(task)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--rebuild", is_flag=True,
              help="Delete the index and embed everything again (after changing the model).")
@click.option("--retry-failed", is_flag=True, help="Try files that failed before again.")
@click.option("--verify", is_flag=True,
              help="Hash every file's content, not only those whose size or time changed "
                   "(finds edits that kept both).")
@click.option("--repair", is_flag=True,
              help="Read the whole index back first and repair what is damaged (what was "
                   "lost is embedded again).")
@click.option("--plan", "show_plan", is_flag=True,
              help="Say what the run would embed and about how long it takes here; index "
                   "nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_obj
def index(state: State, paths: tuple[str, ...], rebuild: bool, retry_failed: bool,
          verify: bool, repair: bool, show_plan: bool, as_json: bool, no_progress: bool) -> None:
    """Index PATHS (default: the folders in the config): only what changed is embedded.

    While `kbterm watch` runs it is the one writer: PATHS are handed over to it and this
    command waits for its result (Ctrl-C stops waiting, not the work).
    """
    from kbterm.indexer import Indexer
    from kbterm.lock import LockHeld

    show = not no_progress and not as_json and sys.stderr.isatty()
    if show_plan:
        _plan(state, list(paths) or None, as_json, show)
        return
    summary = None
    with IndexProgress(show) as progress:
        indexer = Indexer(state.config, progress=progress)
        if not as_json and not (rebuild or repair):
            _header(indexer, list(paths) or None)
        try:
            summary = indexer.run(list(paths) or None, rebuild=rebuild,
                                  retry_failed=retry_failed, verify=verify, repair=repair)
        except LockHeld:
            if rebuild or repair or not _watcher_running(state.config):
                raise
            data = _hand_over(state.config, indexer.roots(list(paths) or None), retry_failed,
                              progress if show else None)
            if data is None:
                return
            from kbterm.indexer import Summary

            summary = Summary(**data)
        except KeyboardInterrupt:
            echo(f"interrupted: kept what was finished: {_kept(indexer)}; "
                 "run kbterm index again to continue", err=True)
            raise SystemExit(130)
        except BackendUnavailable as exc:
            echo(f"kbterm: error: {exc}", err=True)
            echo(f"kept what was finished: {_kept(indexer)}; the other files stay pending: "
                 "run kbterm index again once the server is back (a running kbterm watch "
                 "retries on its own)", err=True)
            raise SystemExit(1)
    if as_json:
        from dataclasses import asdict

        echo_json(asdict(summary))
        return
    if summary.repair:
        echo(summary.repair, err=True)
    for path, reason in summary.failures[:20]:
        echo(f"failed: {one_line(path)}: {reason}", err=True)
    if len(summary.failures) > 20:
        echo(f"... and {len(summary.failures) - 20} more (kbterm status)", err=True)
    echo(summary.line())
    problems = len(summary.failures) + len(summary.warnings)
    if problems:
        echo(f"{problems} warning(s): see `kbterm status`", err=True)


def _header(indexer: Any, paths: list[str] | None) -> None:
    """A large run says first what it will do (never stops the run)."""
    from kbterm.plan import run_header

    try:
        lines = run_header(indexer, indexer.roots(paths))
    except KbtermError:
        return  # (the run says it better)
    for line in lines:
        echo(line, err=True)


def _plan(state: State, paths: list[str] | None, as_json: bool, show: bool) -> None:
    """``kbterm index --plan``: counts, then (measured once per host) the time."""
    from kbterm.indexer import Indexer
    from kbterm.plan import Planner, estimate, measured_rates, plan_dict, render

    indexer = Indexer(state.config)
    roots = indexer.roots(paths)
    rates = measured_rates(indexer, measure=False)
    if rates is None:
        echo("measuring the embedding speed on this host (once; kept in latency.json)…",
             err=True)
        rates = measured_rates(indexer)
    with IndexProgress(show) as progress:
        indexer.progress = progress
        planner = Planner(indexer, progress)
        work = planner.count(roots)
    measured = planner.rates
    rates.read_text, rates.draw_pixel = measured.read_text, measured.draw_pixel
    rates.photo_pixel, rates.video_frame = measured.photo_pixel, measured.video_frame
    if as_json:
        echo_json(plan_dict(work, rates, estimate(work, rates)))
    else:
        echo(render(planner, work, rates))


def _watcher_running(config: Any) -> bool:
    from kbterm.watchstate import read_state

    info = read_state(config.data_path)
    return info is not None and info.running


def _hand_over(config: Any, roots: list[str], retry_failed: bool,
               progress: Any) -> dict[str, Any] | None:
    """Give ``roots`` to the running watcher and wait for its summary (None: gave up)."""
    import time

    from kbterm.watchstate import hand_over, read_state, request_result

    data_dir = config.data_path
    info = read_state(data_dir)
    request = hand_over(data_dir, roots, retry_failed)
    echo(f"kbterm watch (pid {info.pid if info else '?'}) is running: "
         "it indexes these paths; waiting for it (Ctrl-C stops waiting)", err=True)
    try:
        while True:
            result = request_result(data_dir, request.id)
            if result is not None:
                (data_dir / "watch-requests" / f"{request.id}.done").unlink(missing_ok=True)
                break
            info = read_state(data_dir)
            if info is None or not info.running:
                raise KbtermError("the watcher stopped before indexing the paths; "
                                  "run kbterm index again")
            if progress is not None and info.current:
                progress("index", info.files_done, 0, info.current)
            time.sleep(0.2)
    except KeyboardInterrupt:
        echo("stopped waiting; the watcher goes on indexing (see kbterm status)", err=True)
        return None
    if "error" in result:
        raise KbtermError(f"the watcher could not index the paths: {result['error']}")
    from dataclasses import fields

    from kbterm.indexer import Summary

    names = {f.name for f in fields(Summary)}
    data = {k: v for k, v in result.items() if k in names}
    data["failures"] = [tuple(f) for f in data.get("failures", [])]
    return data


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--all", "show_all", is_flag=True, help="List every failure.")
@click.pass_obj
def status(state: State, as_json: bool, show_all: bool) -> None:
    """Files and chunks in the index, per type and status, and what failed."""
    from kbterm.status import collect, render

    report = collect(state.config)
    if report.pictures_pending and state.config.folder_paths():
        from kbterm.plan import time_left

        try:
            report.time_left = time_left(state.config)
        except KbtermError:
            pass  # (a server away: the counts still stand)
    if as_json:
        echo_json(report.to_dict())
    else:
        echo(render(report, max_failures=10**9 if show_all else 20))


def _kept(indexer: Any) -> str:
    kept = indexer.last_summary
    if kept is None:
        return "nothing yet"
    return (f"{kept.indexed} file(s) indexed ({kept.chunks_written} chunks), "
            f"{kept.removed} removed")
