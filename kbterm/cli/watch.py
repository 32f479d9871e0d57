"""Keeping the index in step: ``kbterm watch`` (foreground, ``--detach``, ``--stop``)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from kbterm.cli.base import SafeLogFilter, State, cli, echo
from kbterm.errors import KbtermError
from kbterm.textsafe import one_line

# ISO dates in every log line (a locale's 12/01/26 is ambiguous).
LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                               datefmt="%Y-%m-%d %H:%M:%S")


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
        handler.setFormatter(LOG_FORMAT)
    elif interactive:
        from rich.console import Console
        from rich.live import Live
        from rich.logging import RichHandler

        console = Console(stderr=True)
        handler = RichHandler(console=console, show_path=False, markup=False,
                              log_time_format="[%Y-%m-%d %H:%M:%S]")
        live = Live(console=console, auto_refresh=False, transient=True)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(LOG_FORMAT)
    handler.addFilter(SafeLogFilter())
    logger.addHandler(handler)
    logging.getLogger("watchdog").setLevel(logging.WARNING)

    def show(info: Any) -> None:
        if live is not None:
            from rich.text import Text

            # The summary names the file being indexed (once).
            line = Text(f"kbterm watch: {one_line(info.summary())}", style="bold")
            live.update(line, refresh=True)

    watcher = Watcher(config, list(folders) or None, on_state=show,
                      log_file=os.path.abspath(log_file) if log_file else None)

    def on_signal(signum: int, frame: Any) -> None:
        watcher.stop()
        if watcher.busy:
            raise KeyboardInterrupt  # the indexer keeps finished files, drops the rest

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if live is not None:
            with live:
                watcher.run()
        else:
            watcher.run()
    finally:
        logger.removeHandler(handler)


def _detach(state: State, folders: tuple[str, ...], log_file: str | None) -> None:
    """Start ``kbterm watch`` as a background process and wait until it is running."""
    import os
    import time

    from kbterm.child import start_kbterm
    from kbterm.paths import make_private_dir
    from kbterm.lock import WriterLock
    from kbterm.watchstate import read_state

    config = state.config
    data_dir = config.data_path
    running = read_state(data_dir)
    if running is not None and running.running:
        raise KbtermError(f"kbterm watch is already running for {data_dir} (pid {running.pid}); "
                          "stop it with: kbterm watch --stop")
    make_private_dir(data_dir)
    log_path = os.path.abspath(os.path.expanduser(log_file)) if log_file \
        else str(config.watch_log_path)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    args = ["--config", os.path.abspath(state.config_path)] if state.config_path else []
    args += ["watch", *[os.path.abspath(f) for f in folders], "--log-file", log_path]
    with open(log_path, "ab") as out:
        child = start_kbterm(args, data_dir, stdout=out)
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
            echo(f"kbterm watch running in the background (pid {child.pid})")
            echo(f"  log:  {log_path}")
            echo("  stop: kbterm watch --stop")
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
            echo(f"kbterm watch (pid {pid}) stopped")
            return
        time.sleep(0.1)
    raise KbtermError(f"kbterm watch (pid {pid}) is still finishing after 60 s; "
                      f"`kill -9 {pid}` is safe (the index recovers on the next start)")
