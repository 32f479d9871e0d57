"""Exact vector search over the live chunks: a float16 matrix kept beside the index.

Why not LanceDB's own search: a flat scan of 100,000 vectors of 2,048 values through LanceDB
takes about a second a query here, and an ANN index loses recall on small, changing personal
indexes.  A plain matrix-vector product is exact; stored as float16 it reads half the memory of
float32, and torch's float16 kernel runs it on 100,000 x 2,048 in about 10 ms on the 2-core
machines this is built on (BENCHMARKS.md).  float16 keeps 11 significant bits: rounding moves a
cosine by about 1e-4, far below the gaps between real scores.

The matrix lives in ``<data>/cache/`` as an append-only file (``vectors.f16``, one row per chunk
id in ``ids.txt``), so a search process opens it without reading the table's vectors: after an
edit only the new chunks' vectors are fetched and appended.  Rows of chunks that left the index
stay in the file, masked out, until they are a third of it; then the file is rewritten.  Which
rows are live is decided by the store's visibility rule at each :meth:`refresh`, so a search never
returns a chunk a reader may not see.  Any process may refresh (an flock serialises writers of
the cache); the cache is disposable: delete it and it is rebuilt from the table.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kbterm.store import Store

COMPACT_DEAD_FRACTION = 1 / 3


class VectorCache:
    """The append-only float16 matrix of one index (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.folder = store.data_dir / "cache"
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.dim = 0
        self.identity = ""
        self._generation = ""
        self._matrix: np.ndarray | None = None

    # ------------------------------------------------------------------ files
    #
    # <cache>/vectors.json names the current generation folder (v-<token>/ with vectors.f16 and
    # ids.txt).  A rewrite fills a new folder and then replaces vectors.json in one rename, so
    # a crash never pairs one generation's ids with another's vectors.  Appends go to the
    # current folder: vectors first, then ids; the shorter of the two decides how many rows
    # exist, and the next append first cuts the vectors file back to that.

    @property
    def _state_path(self) -> Path:
        return self.folder / "vectors.json"

    @property
    def _vectors_path(self) -> Path:
        return self.folder / self._generation / "vectors.f16"

    @property
    def _ids_path(self) -> Path:
        return self.folder / self._generation / "ids.txt"

    def _read(self) -> None:
        """Load the ids (cheap) and map the matrix (lazy) as they are on disk."""
        self.ids, self.position, self._matrix, self._generation = [], {}, None, ""
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
            dim, identity = int(state["dim"]), str(state["identity"])
            self._generation = str(state["generation"])
            ids = self._ids_path.read_text(encoding="utf-8").split("\n")[:-1]
            rows = self._vectors_path.stat().st_size // (2 * dim)
        except (OSError, ValueError, KeyError, ZeroDivisionError):
            self._generation = ""
            return
        if dim != self.dim or identity != self.identity:
            self._generation = ""
            return
        ids = ids[:rows]
        self.ids = ids
        self.position = {i: n for n, i in enumerate(ids)}

    def matrix(self) -> np.ndarray:
        """The (rows x dim) float16 matrix, memory-mapped."""
        n = len(self.ids)
        if self._matrix is None or self._matrix.shape[0] != n:
            if n == 0:
                self._matrix = np.zeros((0, self.dim), dtype=np.float16)
            else:
                self._matrix = np.memmap(self._vectors_path, dtype=np.float16, mode="r",
                                         shape=(n, self.dim))
        return self._matrix

    # ------------------------------------------------------------------ sync

    def sync(self, live_ids: Sequence[str], dim: int, identity: str) -> np.ndarray:
        """Make every id of ``live_ids`` a row (fetching only missing vectors); returns the
        row of each live id, in order."""
        import fcntl

        self.dim, self.identity = dim, identity
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._read()
                missing = [i for i in live_ids if i not in self.position]
                dead = len(self.ids) - (len(live_ids) - len(missing))
                if not self._generation or \
                        dead > COMPACT_DEAD_FRACTION * (len(self.ids) + len(missing)):
                    self._rewrite(live_ids)
                elif missing:
                    self._append(missing)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        # -1: a chunk whose vector was gone when fetched (a writer replaced it meanwhile).
        return np.fromiter((self.position.get(i, -1) for i in live_ids), dtype=np.int64,
                           count=len(live_ids))

    def _fetch(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Vectors of ``ids`` from the table (all rows when that is most of them)."""
        table = self.store.chunks_table
        if table is None or not ids:
            return [], np.zeros((0, self.dim), dtype=np.float16)
        wanted = set(ids)
        parts: list[Any] = []
        if len(ids) > table.count_rows() // 4:
            parts.append(table.search().select(["id", "vector"]).limit(None).to_arrow())
        else:
            parts.extend(self.store.chunks_by_id(ids, ["id", "vector"]))
        got_ids: list[str] = []
        blocks: list[np.ndarray] = []
        for data in parts:
            if not data.num_rows:
                continue
            names = data.column("id").to_pylist()
            column = data.column("vector").combine_chunks()
            vectors = np.asarray(column.flatten()).reshape(len(column), -1)
            keep = [n for n, i in enumerate(names) if i in wanted]
            got_ids.extend(names[n] for n in keep)
            blocks.append(vectors[keep].astype(np.float16))
        matrix = np.concatenate(blocks) if blocks else np.zeros((0, self.dim), np.float16)
        return got_ids, matrix

    def _append(self, ids: Sequence[str]) -> None:
        got, vectors = self._fetch(ids)
        if not got:
            return
        with open(self._vectors_path, "r+b") as fh:
            fh.truncate(len(self.ids) * 2 * self.dim)  # drop a torn append's extra bytes
            fh.seek(0, os.SEEK_END)
            fh.write(np.ascontiguousarray(vectors).tobytes())
        with open(self._ids_path, "a", encoding="utf-8") as fh:
            fh.write("".join(i + "\n" for i in got))
        for i in got:
            self.position[i] = len(self.ids)
            self.ids.append(i)
        self._matrix = None

    def _rewrite(self, ids: Sequence[str]) -> None:
        import shutil
        import uuid

        got, vectors = self._fetch(ids)
        generation = f"v-{uuid.uuid4().hex[:12]}"
        folder = self.folder / generation
        folder.mkdir()
        (folder / "vectors.f16").write_bytes(np.ascontiguousarray(vectors).tobytes())
        (folder / "ids.txt").write_text("".join(i + "\n" for i in got), encoding="utf-8")
        state = self.folder / f".state.{os.getpid()}.tmp"
        state.write_text(json.dumps({"dim": self.dim, "identity": self.identity,
                                     "generation": generation}), encoding="utf-8")
        os.replace(state, self._state_path)
        # Processes that mapped an old generation keep its inodes until they refresh.
        for old in self.folder.glob("v-*"):
            if old.name != generation:
                shutil.rmtree(old, ignore_errors=True)
        self._generation = generation
        self.ids = list(got)
        self.position = {i: n for n, i in enumerate(got)}
        self._matrix = None


def scores(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine of ``query`` (unit, float32) with every row of ``matrix`` (float16), as float32.

    torch's float16 matrix-vector kernel reads the matrix once (memory-bound, multi-threaded);
    without torch, NumPy works through float32 blocks (slower, same result)."""
    if matrix.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; kept for slim installs
        out = np.empty(matrix.shape[0], dtype=np.float32)
        q = query.astype(np.float32)
        for start in range(0, matrix.shape[0], 65536):
            block = matrix[start:start + 65536].astype(np.float32)
            out[start:start + 65536] = block @ q
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a read-only memmap is fine here
        m = torch.from_numpy(np.asarray(matrix))
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float16))
    return torch.mv(m, q).float().numpy()


def rescore(matrix: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """float32 cosines of ``query`` with the given rows (their float16 values, widened)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return np.asarray(matrix[rows], dtype=np.float32) @ query.astype(np.float32)
    block = torch.from_numpy(np.ascontiguousarray(matrix[rows])).float()
    return (block @ torch.from_numpy(query.astype(np.float32))).numpy()


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest finite values, best first."""
    finite = np.isfinite(values)
    n = int(finite.sum())
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(values):
        part = np.argpartition(-values, k - 1)[:k]
    else:
        part = np.arange(len(values))
    part = part[np.isfinite(values[part])]
    return part[np.argsort(-values[part], kind="stable")]


def nearest(matrix: np.ndarray, rows: np.ndarray, query: np.ndarray, n: int,
            allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
    """The ``n`` chunks most similar to ``query``: (index into ``rows``, cosine), best first.

    ``rows[i]`` is the matrix row of chunk ``i`` (dead rows are simply not listed);
    ``allowed`` masks chunks out (filters).  The float16 product is rounded to 11 bits, so a
    margin of the best rows is rescored in float32 and near-ties come out in exact order."""
    if len(rows) == 0 or n <= 0:
        return []
    sims = scores(matrix, query)[rows]
    if allowed is not None:
        sims = np.where(allowed, sims, -np.inf)
    pool = top_k(sims, max(4 * n, 256))
    exact = rescore(matrix, rows[pool], query)
    order = np.argsort(-exact, kind="stable")[:n]
    return [(int(pool[i]), float(exact[i])) for i in order]
