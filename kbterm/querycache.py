"""Query vectors kept for the next keystrokes: backspacing and typing a word again, or the
same query from the TUI and then ``ask``, does not embed it again.

An LRU of at most :data:`QUERY_VECTORS` vectors, owned by one :class:`~kbterm.retrieval.Searcher`
(so by one embedder and one model), keyed by the query text, the instruction, and the *content*
of a query image or clip (its bytes' digest: the same path holding a new picture is a new
query).  It is cleared when the index was rebuilt (another model or dimension)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Hashable

import numpy as np

QUERY_VECTORS = 256  # a few KB each for the 2B model's 2048 floats


def file_digest(path: str | Path) -> str:
    """A digest of the bytes of ``path`` (read in blocks)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class QueryVectors:
    """``get(key)`` / ``put(key, vector)``, least recently used out first; thread-safe."""

    def __init__(self, size: int = QUERY_VECTORS) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(text: str, instruction: str, media: Any = ()) -> Hashable:
        """The key of a query: its text, its instruction, and the digests of its media (with a
        clip's time range)."""
        return (text, instruction, tuple(media))

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            vector = self._items.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: Hashable, vector: np.ndarray) -> None:
        vector = np.array(vector, dtype=np.float32)  # a copy, read-only: callers share it
        vector.setflags(write=False)
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
