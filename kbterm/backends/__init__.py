"""Which backend runs each model role, chosen from the config (see :mod:`kbterm.backends.base`).

``models.<role>.backend``:

* ``local``: the checkpoint loads in this process (:mod:`kbterm.models`);
* ``server``: ``models.<role>.url`` names an OpenAI-compatible server (vLLM or kbterm serve);
* ``auto`` (the default): a ``kbterm serve`` of this user that runs the same checkpoint for this
  role (found through its state file in the data folder), else in process.

One backend object per role and settings per process.  Importing this module is cheap; the
heavy libraries load inside the chosen backend, when it is first used.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from kbterm.backends.base import AnswerBackend, EmbeddingBackend, Host, RerankBackend

if TYPE_CHECKING:
    from kbterm.config import Config

__all__ = ["Choice", "choose", "get_embedder", "get_reranker", "get_generator", "release_all",
           "Host"]

_lock = threading.Lock()
_backends: dict[tuple[Any, ...], Any] = {}


@dataclass(frozen=True)
class Choice:
    """Where a role runs and why."""

    backend: str  # "local" or "server"
    url: str = ""
    api_key: str = ""
    kind: str = "in process"  # "in process", "kbterm serve" or "server"
    why: str = ""


def choose(config: "Config", role: str) -> Choice:
    """The backend of ``role``: configured, or (auto) a running kbterm serve, else local."""
    section = getattr(config.models, role)
    if section.backend == "local":
        return Choice("local", why=f"models.{role}.backend = local")
    if section.backend == "server":
        key = os.environ.get(section.api_key_env, "") if section.api_key_env else ""
        return Choice("server", section.url, key, "server",
                      why=f"models.{role}.backend = server")
    from kbterm.serve.state import read_state

    state = read_state(config.data_path)
    if state is None:
        return Choice("local", why="no kbterm serve is running")
    served = state.models.get(role)
    if served is None:
        return Choice("local", why=f"the running kbterm serve does not host the {role}")
    if served != section.model:
        return Choice("local", why=f"the running kbterm serve runs {served}, "
                                   f"not {section.model}")
    return Choice("server", state.url, state.token, "kbterm serve",
                  why=f"kbterm serve (pid {state.pid}) runs this model")


def _get(key: tuple[Any, ...], build: Any) -> Any:
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = _backends[key] = build()
        return backend


def _endpoint(config: "Config", role: str, choice: Choice) -> Any:
    from kbterm.backends.http import Endpoint

    section = getattr(config.models, role)
    return Endpoint(choice.url, choice.api_key, section.timeout_seconds, section.retries)


def _serve_tokenizer(config: "Config") -> Any:
    """The tokenizer a kbterm serve hands out for its embedder, kept in the data folder."""
    from kbterm.backends.tokenizer import cached_tokenizer

    return lambda embedder: cached_tokenizer(config.data_path, embedder.tokenizer_file())


def _server(config: "Config", role: str, choice: Choice, build: Any, *settings: Any) -> Any:
    """The one server backend of ``role`` for these settings: ``build(endpoint, model=…,
    served_name=…, kind=…)`` makes it; ``settings`` are the role's own ones that shape it."""
    c = getattr(config.models, role)
    key = (role, choice, c.model, c.served_name, c.timeout_seconds, c.retries, *settings)
    return _get(key, lambda: build(_endpoint(config, role, choice), model=c.model,
                                   served_name=c.served_name, kind=choice.kind))


def get_embedder(config: "Config") -> EmbeddingBackend:
    choice = choose(config, "embedder")
    if choice.backend == "local":
        return local_backend(config, "embedder")
    from kbterm.backends.client import ServerEmbedder

    c = config.models.embedder
    tokenizer = _serve_tokenizer(config) if choice.kind == "kbterm serve" else None
    return _server(config, "embedder", choice, partial(
        ServerEmbedder, dimension=c.dimension, instruction=c.document_instruction,
        in_flight=c.in_flight, tokenizer_source=tokenizer),
        c.dimension, c.document_instruction, c.in_flight)


def get_reranker(config: "Config") -> RerankBackend:
    choice = choose(config, "reranker")
    if choice.backend == "local":
        return local_backend(config, "reranker")
    from kbterm.backends.client import ServerReranker

    c = config.models.reranker
    return _server(config, "reranker", choice,
                   partial(ServerReranker, instruction=c.instruction), c.instruction)


def get_generator(config: "Config") -> AnswerBackend:
    choice = choose(config, "generator")
    if choice.backend == "local":
        return local_backend(config, "generator")
    from kbterm.backends.client import ServerGenerator

    c = config.models.generator
    return _server(config, "generator", choice, partial(
        ServerGenerator, max_new_tokens=c.max_new_tokens, temperature=c.temperature),
        c.max_new_tokens, c.temperature)


def local_backend(config: "Config", role: str) -> Any:
    """The in-process model of ``role`` (what ``local`` means, and what the doctor compares a
    server with)."""
    from kbterm.models import registry

    return {"embedder": registry.get_embedder, "reranker": registry.get_reranker,
            "generator": registry.get_generator}[role](config)


def release_all() -> None:
    """Free the weights of every model this process loaded."""
    import sys

    registry = sys.modules.get("kbterm.models.registry")
    if registry is not None:
        registry.release_all()
