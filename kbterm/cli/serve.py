"""Hosting this machine's models: ``kbterm serve`` (foreground, ``--detach``, ``--stop``)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from kbterm.cli.base import SafeLogFilter, State, cli, echo
from kbterm.cli.watch import LOG_FORMAT, _tail
from kbterm.errors import KbtermError


@cli.command()
@click.option("--host", help="Address to listen on (default serve.host, 127.0.0.1). Any "
                             "address but loopback needs serve.api_key_env.")
@click.option("--port", type=click.IntRange(0, 65535),
              help="Port (default serve.port, 8470; 0 picks a free one).")
@click.option("--socket", "use_socket", is_flag=True, default=None,
              help="Listen on a Unix socket in the data folder instead of TCP.")
@click.option("--detach", is_flag=True, help="Run in the background (log in the data folder).")
@click.option("--stop", "stop_", is_flag=True, help="Stop the running kbterm serve.")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Log to this file (default with --detach: serve.log in the data folder).")
@click.pass_obj
def serve(state: State, host: str | None, port: int | None, use_socket: bool | None,
          detach: bool, stop_: bool, log_file: str | None) -> None:
    """Host the models once for this machine, behind vLLM's OpenAI-compatible API.

    The watcher, the app and every kbterm command of this user then share one warm copy of
    each model (models.*.backend = "auto" finds it); other machines can use it too, with an
    API key.  Runs until Ctrl-C or SIGTERM.
    """
    config = state.config
    if stop_:
        if detach or host or port is not None:
            raise click.UsageError("--stop takes no other option")
        _stop(config)
        return
    host = host or config.serve.host
    port = config.serve.port if port is None else port
    use_socket = config.serve.socket if use_socket is None else use_socket
    if detach:
        _detach(state, host, port, use_socket, log_file)
        return
    _foreground(config, host, port, use_socket, log_file)


def _foreground(config: Any, host: str, port: int, use_socket: bool,
                log_file: str | None) -> None:
    from kbterm.serve.run import serve as run_server

    logger = logging.getLogger("kbterm")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if log_file:
        from logging.handlers import RotatingFileHandler

        handler: logging.Handler = RotatingFileHandler(log_file, maxBytes=10 << 20,
                                                       backupCount=2, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LOG_FORMAT)
    handler.addFilter(SafeLogFilter())
    logger.addHandler(handler)
    try:
        run_server(config, host=host, port=port, use_socket=use_socket,
                   on_ready=lambda url: None if log_file else
                   echo(f"kbterm serve: ready at {url} (Ctrl-C stops)", err=True))
    finally:
        logger.removeHandler(handler)


def _detach(state: State, host: str, port: int, use_socket: bool, log_file: str | None) -> None:
    from kbterm.child import start_kbterm
    from kbterm.paths import make_private_dir
    from kbterm.serve.state import read_state, wait_ready

    config = state.config
    data_dir = config.data_path
    running = read_state(data_dir, ready_only=False)
    if running is not None:
        raise KbtermError(f"kbterm serve is already running (pid {running.pid}) at "
                          f"{running.url}; stop it with: kbterm serve --stop")
    make_private_dir(data_dir)
    log_path = os.path.abspath(os.path.expanduser(log_file)) if log_file \
        else str(config.serve_log_path)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    args = ["--config", os.path.abspath(state.config_path)] if state.config_path else []
    args += ["serve", "--host", host, "--port", str(port), "--log-file", log_path]
    if use_socket:
        args.append("--socket")
    with open(log_path, "ab") as out:
        child = start_kbterm(args, data_dir, stdout=out)
    # Loading three 2B models from disk takes a while on a CPU; a GPU box is quicker.
    ready = wait_ready(data_dir, child.pid, timeout=600)
    if ready is None:
        code = child.poll()
        why = f"exited (code {code})" if code is not None else "did not get ready in 600 s"
        raise KbtermError(f"kbterm serve {why}; log {log_path}:\n" + _tail(log_path, 5))
    echo(f"kbterm serve running in the background (pid {child.pid}) at {ready.url}")
    echo(f"  models: {', '.join(f'{r} {m}' for r, m in ready.models.items())}")
    echo(f"  log:    {log_path}")
    echo("  stop:   kbterm serve --stop")


def _stop(config: Any) -> None:
    import signal
    import time

    from kbterm.serve.state import pid_alive, read_state

    info = read_state(config.data_path, ready_only=False)
    if info is None:
        raise KbtermError(f"no kbterm serve is running for {config.data_path}")
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not pid_alive(info.pid):
            echo(f"kbterm serve (pid {info.pid}) stopped")
            return
        time.sleep(0.1)
    raise KbtermError(f"kbterm serve (pid {info.pid}) is still running after 30 s; "
                      f"`kill -9 {info.pid}` is safe")
