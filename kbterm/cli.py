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
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            click.echo(ctx.get_help())  # not a terminal: the app cannot run; say what can
            return
        from kbterm.tui.app import run

        run(ctx.obj.config)


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
    """Index PATHS (default: the folders in the config): only what changed is embedded.

    While `kbterm watch` runs it is the one writer: PATHS are handed over to it and this
    command waits for its result (Ctrl-C stops waiting, not the work).
    """
    from kbterm.indexer import Indexer
    from kbterm.lock import LockHeld

    show = not no_progress and not as_json and sys.stderr.isatty()
    summary = None
    with _Progress(show) as progress:
        indexer = Indexer(state.config, progress=progress)
        try:
            summary = indexer.run(list(paths) or None, rebuild=rebuild,
                                  retry_failed=retry_failed)
        except LockHeld:
            if rebuild or not _watcher_running(state.config):
                raise
            data = _hand_over(state.config, indexer.roots(list(paths) or None), retry_failed,
                              progress if show else None)
            if data is None:
                return
            from kbterm.indexer import Summary

            summary = Summary(**data)
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
    click.echo(f"kbterm watch (pid {info.pid if info else '?'}) is running: "
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
        click.echo("stopped waiting; the watcher goes on indexing (see kbterm status)", err=True)
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
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(render(report, max_failures=10**9 if show_all else 20))


def _parse_when(value: str | None, name: str) -> float | None:
    """``2026-11-01``, ``2026-11-01T14:30`` or a relative ``7d`` / ``12h`` / ``30m``."""
    from kbterm.errors import InputError
    from kbterm.retrieval import WHEN_FORMATS, parse_when

    if value is None:
        return None
    try:
        return parse_when(value, name)
    except InputError:
        raise click.BadParameter(f"{value!r}: {WHEN_FORMATS}", param_hint=name) from None


def _filters(paths: tuple[str, ...], types: tuple[str, ...], modalities: tuple[str, ...],
             after: str | None, before: str | None) -> Any:
    from kbterm.retrieval import Filters

    return Filters(paths=paths, types=types, modalities=modalities,
                   modified_after=_parse_when(after, "--after"),
                   modified_before=_parse_when(before, "--before"))


_FILE_TYPES = ["text", "markdown", "html", "json", "pdf", "image", "video"]


@cli.command()
@click.argument("query", required=False, default="")
@click.option("--image", "image", type=click.Path(exists=True, dir_okay=False),
              help="Search by an image (with or without QUERY text).")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many results.")
@click.option("--no-rerank", is_flag=True, help="Skip the reranker (faster).")
@click.option("--path", "paths", multiple=True,
              help="Only files under this folder or matching this glob (repeatable).")
@click.option("--type", "types", multiple=True, type=click.Choice(_FILE_TYPES),
              help="Only this file type (repeatable).")
@click.option("--modality", "modalities", multiple=True,
              type=click.Choice(["text", "image", "video"]),
              help="Only text passages, images (photos, PDF pages) or video segments.")
@click.option("--after", help="Only files modified after this date or age (2026-11-01, 7d).")
@click.option("--before", help="Only files modified before this date or age.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def search(state: State, query: str, image: str | None, k: int, no_rerank: bool,
           paths: tuple[str, ...], types: tuple[str, ...], modalities: tuple[str, ...],
           after: str | None, before: str | None, as_json: bool) -> None:
    """Search the index for QUERY (text), an --image, or both."""
    from kbterm.retrieval import Searcher

    if not query.strip() and image is None:
        raise click.UsageError("give a QUERY, an --image, or both")
    filters = _filters(paths, types, modalities, after, before)
    searcher = Searcher(state.config)
    results = searcher.search(query, image, k=k, rerank=not no_rerank, filters=filters)
    if as_json:
        click.echo(json.dumps(results.to_json(), indent=2, ensure_ascii=False))
    else:
        for warning in results.warnings:
            click.echo(f"warning: {warning}", err=True)
        if not results.hits:
            click.echo("no results")
        for hit in results.hits:
            scores = []
            if hit.rerank_score is not None:
                scores.append(f"rerank {hit.rerank_score:.3f}")
            if hit.embedding_score is not None:
                scores.append(f"cosine {hit.embedding_score:.3f}")
            if hit.keyword_score is not None:
                scores.append(f"bm25 {hit.keyword_score:.2f}")
            icon = {"text": "¶", "image": "▣", "video": "▶"}.get(hit.modality, "·")
            click.echo(f"{hit.rank:>3}. {icon} {hit.citation()}  [{', '.join(scores)}]")
            click.echo(f"     {hit.path}")
            if hit.modality == "text":
                click.echo(f"     {hit.snippet}")
            elif hit.image_path:
                click.echo(f"     image: {hit.image_path}")
        t = results.timings_ms
        click.echo(f"{len(results.hits)} results in {results.total_ms:.0f} ms (embed "
                   f"{t.get('embed', 0):.0f}, retrieve {t.get('retrieve', 0):.0f}, rerank "
                   f"{t.get('rerank', 0):.0f})", err=True)
    if not results.hits:
        raise SystemExit(1)


@cli.command()
@click.argument("question")
@click.option("--image", "image", type=click.Path(exists=True, dir_okay=False),
              help="An image the question is about (searched with the question).")
@click.option("--path", "paths", multiple=True, help="Only evidence under this folder or glob.")
@click.option("--type", "types", multiple=True, type=click.Choice(_FILE_TYPES),
              help="Only evidence from this file type.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the answer, its citations and sources as JSON.")
@click.option("--no-stream", is_flag=True, help="Print the answer when it is complete.")
@click.pass_obj
def ask(state: State, question: str, image: str | None, paths: tuple[str, ...],
        types: tuple[str, ...], as_json: bool, no_stream: bool) -> None:
    """Answer QUESTION from your files, citing them ([1] report.pdf, page 12).

    Exit status: 0 answered, 1 no index or nothing relevant, 2 usage error.
    """
    from kbterm.answer import Asker, NoEvidence

    if not question.strip():
        raise click.UsageError("the question is empty")
    asker = Asker(state.config)
    filters = _filters(paths, types, (), None, None)
    try:
        answer = asker.prepare(question, image, filters)
    except NoEvidence as exc:
        if as_json:
            click.echo(json.dumps({"question": question, "answer": None, "error": str(exc)}))
        else:
            click.echo(f"The knowledge base has no answer to this: {exc}.")
        raise SystemExit(1)
    for warning in answer.warnings:
        click.echo(f"warning: {warning}", err=True)
    stream = not (as_json or no_stream)
    from kbterm.answer import GeneratorMissing

    try:
        for piece in asker.stream(answer):
            if stream:
                click.echo(piece, nl=False)
                sys.stdout.flush()
    except GeneratorMissing:
        # Still useful: the sources an answer would have come from.
        click.echo("Most relevant sources:\n" + answer.sources_text(), err=True)
        raise
    except KeyboardInterrupt:
        answer.cancelled = True
        click.echo("\n[stopped]", err=True)
        if not as_json:
            click.echo("\n\nSources:\n" + answer.sources_text())
        raise SystemExit(130)
    if as_json:
        click.echo(json.dumps(answer.to_json(), indent=2, ensure_ascii=False))
        return
    if not stream:
        click.echo(answer.text.strip(), nl=False)
    click.echo("\n\nSources:\n" + answer.sources_text())


@cli.command()
@click.argument("folders", nargs=-1,
                type=click.Path(exists=True, file_okay=False, dir_okay=True))
@click.option("--detach", is_flag=True,
              help="Run in the background (pid and log file in the data folder).")
@click.option("--stop", "stop_", is_flag=True, help="Stop the running watcher cleanly.")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Log to this file instead of stderr (default with --detach: "
                   "watch.log in the data folder).")
@click.pass_obj
def watch(state: State, folders: tuple[str, ...], detach: bool, stop_: bool,
          log_file: str | None) -> None:
    """Keep the index in step with FOLDERS (default: the folders in the config).

    Runs in the foreground with a live status line (for tmux, systemd, launchd) until Ctrl-C
    or SIGTERM; every created, changed, renamed or deleted file is indexed a moment later.
    """
    if stop_:
        if detach or folders:
            raise click.UsageError("--stop takes no folders and no --detach")
        _stop_watcher(state.config)
        return
    if not folders and not state.config.library.folders:
        raise click.UsageError(
            "no folders to watch: name them (kbterm watch ~/Documents) "
            "or list them under [library] in the config")
    if detach:
        _detach(state, folders, log_file)
        return
    _watch_foreground(state.config, folders, log_file)


def _watch_foreground(config: Any, folders: tuple[str, ...], log_file: str | None) -> None:
    import os
    import signal

    from kbterm.watch import Watcher

    interactive = log_file is None and sys.stderr.isatty()
    logger = logging.getLogger("kbterm")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    live = None
    if log_file:
        from logging.handlers import RotatingFileHandler

        handler: logging.Handler = RotatingFileHandler(log_file, maxBytes=10 << 20,
                                                       backupCount=2, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    elif interactive:
        from rich.console import Console
        from rich.live import Live
        from rich.logging import RichHandler

        console = Console(stderr=True)
        handler = RichHandler(console=console, show_path=False, markup=False)
        live = Live(console=console, auto_refresh=False, transient=True)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logging.getLogger("watchdog").setLevel(logging.WARNING)

    def show(info: Any) -> None:
        if live is not None:
            from rich.text import Text

            line = Text(f"kbterm watch: {info.summary()}", style="bold")
            if info.state == "indexing" and info.current:
                line.append(f"  {info.current}", style="dim")
            live.update(line, refresh=True)

    watcher = Watcher(config, list(folders) or None, on_state=show,
                      log_file=os.path.abspath(log_file) if log_file else None)

    def on_signal(signum: int, frame: Any) -> None:
        watcher.stop()
        if watcher.busy:
            raise KeyboardInterrupt  # the indexer keeps finished files, drops the rest

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("watching %s (data in %s)", ", ".join(watcher.roots), config.data_path)
    try:
        if live is not None:
            with live:
                watcher.run()
        else:
            watcher.run()
    finally:
        logger.info("stopped")
        logger.removeHandler(handler)


def _detach(state: State, folders: tuple[str, ...], log_file: str | None) -> None:
    """Start ``kbterm watch`` as a background process and wait until it is running."""
    import os
    import subprocess
    import time

    from kbterm.lock import WriterLock
    from kbterm.watchstate import read_state

    config = state.config
    data_dir = config.data_path
    running = read_state(data_dir)
    if running is not None and running.running:
        raise KbtermError(f"kbterm watch is already running for {data_dir} (pid {running.pid}); "
                          "stop it with: kbterm watch --stop")
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = os.path.abspath(os.path.expanduser(log_file)) if log_file \
        else str(config.watch_log_path)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    argv = [sys.executable, "-m", "kbterm"]
    if state.config_path:
        argv += ["--config", os.path.abspath(state.config_path)]
    argv += ["watch", *[os.path.abspath(f) for f in folders], "--log-file", log_path]
    with open(log_path, "ab") as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, close_fds=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            holder = WriterLock(data_dir, "").holder()
            tail = _tail(log_path, 5)
            if holder.get("pid"):
                raise KbtermError(f"another kbterm is writing to {data_dir}: pid "
                                  f"{holder['pid']} ({holder.get('command', 'kbterm')})")
            raise KbtermError(f"kbterm watch exited at once (code {code}); log {log_path}:\n"
                              + tail)
        info = read_state(data_dir)
        if info is not None and info.pid == child.pid and info.running:
            click.echo(f"kbterm watch running in the background (pid {child.pid})")
            click.echo(f"  log:  {log_path}")
            click.echo("  stop: kbterm watch --stop")
            return
        time.sleep(0.1)
    raise KbtermError(f"kbterm watch (pid {child.pid}) did not report within 60 s; "
                      f"see {log_path}")


def _tail(path: str, n: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError:
        return ""


def _stop_watcher(config: Any) -> None:
    import os
    import signal
    import time

    from kbterm.watchstate import pid_alive, read_state

    info = read_state(config.data_path)
    if info is None or not info.running:
        raise KbtermError(f"no kbterm watch is running for {config.data_path}")
    pid = info.pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            click.echo(f"kbterm watch (pid {pid}) stopped")
            return
        time.sleep(0.1)
    raise KbtermError(f"kbterm watch (pid {pid}) is still finishing after 60 s; "
                      f"`kill -9 {pid}` is safe (the index recovers on the next start)")


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
