"""One model object per role and configuration per process, built from the config.

``get_embedder(config)`` returns the same :class:`Embedder` every time it is called with the same
settings, so a checkpoint loads once per process however many parts of kbterm use it.  The heavy
libraries load only when a model is first used, not when it is created.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from kbterm.models.base import LazyModel, ModelSpec
from kbterm.models.runtime import Role

if TYPE_CHECKING:
    from kbterm.config import Config
    from kbterm.models.embedder import Embedder
    from kbterm.models.generator import Generator
    from kbterm.models.reranker import Reranker

_lock = threading.Lock()
_models: dict[tuple[Any, ...], LazyModel] = {}


def model_spec(config: "Config", role: Role) -> ModelSpec:
    """The checkpoint and runtime settings of ``role`` (per-role device/dtype beat the global)."""
    models = config.models
    section = getattr(models, role)
    return ModelSpec(
        role=role,
        model=section.model,
        device=section.device or models.device,
        dtype=section.dtype or models.dtype,
        source=models.source,
        offline=models.offline,
    )


def _get(key: tuple[Any, ...], build: Any) -> Any:
    with _lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = build()
        return model


def get_embedder(config: "Config") -> "Embedder":
    from kbterm.models.embedder import Embedder

    spec, c = model_spec(config, "embedder"), config.models.embedder
    key = ("embedder", spec, c.dimension, c.document_instruction, c.batch_tokens, c.max_length)
    return _get(key, lambda: Embedder(
        spec, dimension=c.dimension, instruction=c.document_instruction,
        batch_tokens=c.batch_tokens, max_length=c.max_length,
    ))


def get_reranker(config: "Config") -> "Reranker":
    from kbterm.models.reranker import Reranker

    spec, c = model_spec(config, "reranker"), config.models.reranker
    key = ("reranker", spec, c.instruction, c.batch_tokens, c.max_length, c.vision_cache_mb)
    return _get(key, lambda: Reranker(
        spec, instruction=c.instruction, batch_tokens=c.batch_tokens, max_length=c.max_length,
        vision_cache_mb=c.vision_cache_mb,
    ))


def get_generator(config: "Config") -> "Generator":
    from kbterm.models.generator import Generator

    spec, c = model_spec(config, "generator"), config.models.generator
    key = ("generator", spec, c.max_new_tokens, c.temperature)
    return _get(key, lambda: Generator(
        spec, max_new_tokens=c.max_new_tokens, temperature=c.temperature,
    ))


def release_all() -> None:
    """Free the weights of every model this process loaded."""
    with _lock:
        models = list(_models.values())
    for model in models:
        model.release()
