"""One HTTP connection to a model server: auth, timeouts, retries and errors in one line.

Addresses are ``http(s)://host:port`` (a path prefix such as ``/v1`` is dropped: endpoints are
named in full) or ``unix:///path/to/socket``.  The API key is read from an environment variable
(never from the config file) and sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from kbterm.errors import BackendProtocolError, BackendUnavailable, InputError

log = logging.getLogger(__name__)

# Statuses worth another try: the server is starting, overloaded or restarting.
RETRY_STATUSES = (408, 429, 502, 503, 504)
RETRY_BACKOFF_SECONDS = (0.5, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens and how to talk to it."""

    url: str
    api_key: str = ""
    timeout: float = 120.0
    retries: int = 2

    @property
    def display(self) -> str:
        return self.url


def _base(url: str) -> tuple[str, str | None]:
    """(base URL for httpx, Unix socket path or None)."""
    if url.startswith("unix://"):
        return "http://kbterm-serve", url[len("unix://"):]
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return base, None


def error_message(body: bytes) -> str:
    """The message of an error body: OpenAI's ``{"error": {"message"}}``, vLLM's older
    ``{"object": "error", "message"}``, or FastAPI's ``{"detail"}``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return text.splitlines()[0][:300] if text else "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        for key in ("message", "detail"):
            if data.get(key):
                return str(data[key])
    return str(data)[:300]


class Connection:
    """A pooled client for one server (thread-safe: httpx.Client is)."""

    def __init__(self, endpoint: Endpoint, role: str) -> None:
        import httpx

        self.endpoint = endpoint
        self.role = role
        base, uds = _base(endpoint.url)
        transport = httpx.HTTPTransport(uds=uds, retries=0) if uds else None
        headers = {"User-Agent": "kbterm"}
        if endpoint.api_key:
            headers["Authorization"] = f"Bearer {endpoint.api_key}"
        self._client = httpx.Client(
            base_url=base, transport=transport, headers=headers,
            timeout=httpx.Timeout(endpoint.timeout, connect=min(10.0, endpoint.timeout)),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    def _down(self, why: str) -> BackendUnavailable:
        return BackendUnavailable(f"the {self.role} server at {self.endpoint.display} {why}")

    def _check(self, response: Any) -> None:
        status = response.status_code
        if status < 400:
            return
        message = error_message(response.read())
        if status in (401, 403):
            raise self._down(f"refused the API key ({status}: {message}); set the variable "
                             f"models.{self.role}.api_key_env names")
        if status == 404:
            raise BackendProtocolError(
                f"the {self.role} server at {self.endpoint.display} has no "
                f"{response.request.url.path} ({message}): is it the right kind of server "
                "(vLLM with the matching --runner, or kbterm serve)?")
        if status in (400, 413, 422):
            raise InputError(f"the {self.role} server rejected the input: {message}")
        raise self._down(f"answered {status}: {message}")

    def _send(self, method: str, path: str, body: Any, stream: bool) -> Any:
        import httpx

        attempts = max(0, self.endpoint.retries) + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                request = self._client.build_request(method, path, json=body)
                response = self._client.send(request, stream=stream)
            except httpx.TimeoutException:
                if last:
                    raise self._down(f"did not answer within {self.endpoint.timeout:g} s "
                                     f"(models.{self.role}.timeout_seconds)") from None
            except httpx.TransportError as exc:
                if last:
                    raise self._down(f"cannot be reached ({exc or type(exc).__name__}); "
                                     "is it running?") from None
            else:
                self.requests += 1
                if response.status_code in RETRY_STATUSES and not last:
                    response.close()
                else:
                    return response
            delay = RETRY_BACKOFF_SECONDS[min(attempt, len(RETRY_BACKOFF_SECONDS) - 1)]
            log.info("%s server %s: retrying in %g s", self.role, self.endpoint.display, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str) -> Any:
        response = self._send("GET", path, None, stream=False)
        self._check(response)
        return self._json(response)

    def get_bytes(self, path: str) -> bytes:
        response = self._send("GET", path, None, stream=False)
        self._check(response)
        return response.content

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self._send("POST", path, body, stream=False)
        self._check(response)
        return self._json(response)

    @contextmanager
    def stream(self, path: str, body: dict[str, Any]) -> Iterator[Any]:
        """A streamed POST; closing it closes the connection (the server then stops)."""
        response = self._send("POST", path, body, stream=True)
        try:
            self._check(response)
            yield response
        finally:
            response.close()

    def _json(self, response: Any) -> Any:
        try:
            return response.json()
        except ValueError:
            raise BackendProtocolError(
                f"the {self.role} server at {self.endpoint.display} answered "
                f"{response.request.url.path} with something that is not JSON") from None
