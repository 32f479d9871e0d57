"""The Qwen3-VL model layer: embedder, reranker and answer generator.

Importing this package is cheap: torch and transformers load when a model is first used.
"""

from kbterm.models.registry import get_embedder, get_generator, get_reranker, release_all

__all__ = ["get_embedder", "get_generator", "get_reranker", "release_all"]
