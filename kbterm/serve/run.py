"""Running ``kbterm serve``: load the models, bind, publish the state file, serve, clean up.

uvicorn serves the Starlette app (:mod:`kbterm.serve.app`): an ASGI server that streams
server-sent events and sees a client disconnect, which is what a streamed answer needs to stop
when its reader goes away.  The socket is bound here, before uvicorn starts, so that port 0
(any free port) is known in time for the state file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Callable

from kbterm.errors import ConfigError, KbtermError

if TYPE_CHECKING:
    from kbterm.config import Config

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_keys(config: "Config", host: str, use_socket: bool) -> list[str]:
    """The configured API key (required past loopback); the state file's token comes on top."""
    env = config.serve.api_key_env
    key = os.environ.get(env, "") if env else ""
    if env and not key:
        raise ConfigError(f"serve.api_key_env names {env}, which is not set")
    if not use_socket and not is_loopback(host) and not key:
        raise ConfigError(
            f"kbterm serve on {host} would be reachable from other machines: set an API key "
            "(serve.api_key_env names the environment variable that holds it), or bind "
            "127.0.0.1")
    return [key] if key else []


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = " (another kbterm serve? `kbterm serve --stop`, or --port 0)" \
            if exc.errno == 98 else ""
        raise KbtermError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(config: "Config", *, host: str, port: int, use_socket: bool,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's own handlers stop it cleanly)."""
    import uvicorn

    from kbterm import __version__
    from kbterm.serve.app import make_app
    from kbterm.serve.hosts import Hosts
    from kbterm.serve.state import (
        ServeState,
        clear_state,
        new_token,
        read_state,
        socket_path,
        write_state,
    )

    data_dir = config.data_path
    running = read_state(data_dir, ready_only=False)
    if running is not None and running.pid != os.getpid():
        raise KbtermError(f"kbterm serve is already running for {data_dir} (pid {running.pid}) "
                          f"at {running.url}; stop it with: kbterm serve --stop")
    keys = api_keys(config, host, use_socket)
    token = new_token()
    roles = list(dict.fromkeys(config.serve.roles))
    models = {role: getattr(config.models, role).model for role in roles}
    sock = None
    if use_socket:
        path = socket_path(data_dir)
        path.unlink(missing_ok=True)  # a server that died left it; none runs now
        url = f"unix://{path}"
    else:
        sock = bind(host, port)
        bound = sock.getsockname()[1]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
    state = ServeState(pid=os.getpid(), url=url, token=token, models=models,
                       started_at=time.time(), version=__version__)
    write_state(data_dir, state)  # not ready yet: clients keep loading in process
    hosts = Hosts(config, roles)
    try:
        log.info("loading %s", ", ".join(f"{r} {m}" for r, m in models.items()))
        hosts.load()
        info = {role: model.host() for role, model in hosts.models().items()}
        for role, h in info.items():
            log.info("%s on %s (%s)", role, h.describe(), h.why)
        _measure(config, hosts, info, url)
        app = make_app(hosts, keys + [token], info)
        if use_socket:
            uv = uvicorn.Config(app, uds=str(path), log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=5)
        else:
            uv = uvicorn.Config(app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=5)
        server = uvicorn.Server(uv)

        def started() -> None:
            if use_socket:
                os.chmod(path, 0o600)
            state.ready = True
            write_state(data_dir, state)
            log.info("kbterm serve ready at %s", url)
            if on_ready is not None:
                on_ready(url)

        _on_started(server, started)
        # uvicorn stops on SIGINT/SIGTERM, then raises the signal again under the handlers
        # it found: these turn it into a clean exit, so the clean-up below runs.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _exit_cleanly)
        server.run(sockets=[sock] if sock is not None else None)
    finally:
        hosts.close()
        clear_state(data_dir, os.getpid())
        if use_socket:
            try:
                socket_path(data_dir).unlink()
            except OSError:
                pass


def _measure(config: "Config", hosts: object, info: dict, url: str) -> None:
    """Each role's expected latency on this host, once (clients see it through doctor)."""
    from kbterm.backends.base import Host
    from kbterm.backends.latency import expected, measure, record

    for role, model in hosts.models().items():  # type: ignore[attr-defined]
        h = info[role]
        key = Host("kbterm serve", getattr(config.models, role).model, h.device, h.dtype,
                   url=url)
        if expected(config.data_path, role, key) is None:
            seconds = measure(role, model, config.models.embedder.query_instruction, repeats=1)
            record(config.data_path, role, key, seconds)
            log.info("%s: one call takes %.3f s here", role, seconds)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _on_started(server: "object", callback: Callable[[], None]) -> None:
    """Call ``callback`` once uvicorn listens (it sets ``started`` after its startup)."""
    original = server.startup  # type: ignore[attr-defined]

    async def startup(sockets: object = None) -> None:
        await original(sockets=sockets)
        if getattr(server, "started", False) or not getattr(server, "should_exit", False):
            callback()

    server.startup = startup  # type: ignore[attr-defined]
