"""``kbterm mcp``: the knowledge base as MCP tools for AI agents (stdio, or --http)."""

from __future__ import annotations

import os

import click

from kbterm.cli.base import State, cli, echo
from kbterm.errors import ConfigError


@cli.command()
@click.option("--http", "http", is_flag=True,
              help="Serve Streamable HTTP instead of stdio ([mcp] host and port).")
@click.option("--host", help="Address to listen on with --http (default: mcp.host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port with --http (mcp.port).")
@click.pass_obj
def mcp(state: State, http: bool, host: str | None, port: int | None) -> None:
    """Serve search, get, ask and status to AI agents over the Model Context Protocol.

    Over stdio an agent starts this command itself (nothing but the protocol goes to stdout).
    Read-only: it never writes the index, and works while kbterm watch writes it.
    """
    from kbterm.mcpserver import build_server

    config = state.config
    if not http:
        build_server(config).run("stdio")
        return
    host = host or config.mcp.host
    port = port or config.mcp.port
    from kbterm.serve.run import is_loopback

    env = config.mcp.api_key_env
    key = os.environ.get(env, "") if env else ""
    if env and not key:
        raise ConfigError(f"mcp.api_key_env names {env}, which is not set")
    if not is_loopback(host) and not key:
        raise ConfigError(f"kbterm mcp on {host} would be reachable from other machines: set "
                          "an API key (mcp.api_key_env names the environment variable that "
                          "holds it), or bind 127.0.0.1")
    from kbterm.mcphttp import serve_http

    server = build_server(config)

    echo(f"kbterm mcp: Streamable HTTP at http://{host}:{port}/mcp"
         + (" (API key required)" if key else ""), err=True)
    serve_http(server, host, port, key, list(config.mcp.allowed_origins))
