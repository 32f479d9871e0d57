"""``kbterm mcp --http``: the MCP server over Streamable HTTP, with the checks the MCP spec
asks of a local server: the Host header must name this server (DNS rebinding), a browser's
Origin must be one the user allowed, and past loopback every request needs the API key
(``Authorization: Bearer``)."""

from __future__ import annotations

import hmac
from typing import Any


def allowed_hosts(host: str, port: int) -> list[str]:
    names = {host, "127.0.0.1", "localhost", "[::1]"} if host in (
        "127.0.0.1", "localhost", "::1") else {host}
    return sorted({f"{n}:{port}" for n in names} | names)


def serve_http(server: Any, host: str, port: int, key: str, origins: list[str]) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    security = TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                         allowed_hosts=allowed_hosts(host, port),
                                         allowed_origins=origins)
    app = server.streamable_http_app(transport_security=security, host=host)
    if key:
        app = KeyRequired(app, key)
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")


class KeyRequired:
    """ASGI middleware: 401 unless ``Authorization: Bearer <key>`` (compared in constant
    time)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            value = headers.get(b"authorization", b"").decode("latin-1")
            token = value[7:].strip() if value.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), self.key.encode()):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body",
                            "body": b'{"error": "missing or wrong API key (Authorization: '
                                    b'Bearer)"}'})
                return
        await self.app(scope, receive, send)
