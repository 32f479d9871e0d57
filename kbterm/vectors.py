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

Every block of rows carries a CRC-32, checked once per process (about 50 ms per 100 MB): a
damaged cache is never served, it is logged and rebuilt from the table.  A process that cannot
write the cache (a read-only data folder, a full disk) serves what is on disk when it is
complete, and otherwise holds the vectors in memory; it writes nothing and says so only in the
verbose log.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import warnings
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kbterm.store import CHUNKS, Store, is_disk_full, is_not_writable

log = logging.getLogger(__name__)

COMPACT_DEAD_FRACTION = 1 / 3


class VectorCache:
    """The append-only float16 matrix of one index (see the module docstring)."""

    def __init__(self, store: Store, read_only: bool = False) -> None:
        self.store = store
        self.folder = store.data_dir / "cache"
        self.read_only = read_only  # never write the cache (it is read if it is there)
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.dim = 0
        self.identity = ""
        self._generation = ""
        self._matrix: np.ndarray | None = None
        self._ids_bytes = 0  # length of ids.txt that the checksums cover
        self._sums_bytes = 0  # length of sums.txt up to its last whole line
        self._verified: tuple[str, int] = ("", 0)  # (generation, rows) checked in this process
        # The matrix held in memory instead: the cache folder cannot be written (a read-only
        # data folder, a full disk).  Nothing is written from then on.
        self._memory: np.ndarray | None = None
        self._unwritable = ""  # why the cache folder cannot be written

    # ------------------------------------------------------------------ files
    #
    # <cache>/vectors.json names the current generation folder (v-<token>/ with vectors.f16,
    # ids.txt and sums.txt).  A rewrite fills a new folder and then replaces vectors.json in one
    # rename, so a crash never pairs one generation's ids with another's vectors.  An append
    # goes to the current folder: vectors, then ids, then one line of sums.txt, which commits
    # it: "<rows> <ids bytes> <crc32>", the rows and the length of ids.txt after the block and
    # the CRC-32 of the block's vector bytes followed by its id bytes.  What lies past the last
    # line (a torn append) does not count and the next append cuts it off; a block whose CRC
    # does not match (the file was damaged) discards the cache, which is rebuilt from the
    # table.  Each process checks a block once.

    @property
    def _state_path(self) -> Path:
        return self.folder / "vectors.json"

    @property
    def _vectors_path(self) -> Path:
        return self.folder / self._generation / "vectors.f16"

    @property
    def _ids_path(self) -> Path:
        return self.folder / self._generation / "ids.txt"

    @property
    def _sums_path(self) -> Path:
        return self.folder / self._generation / "sums.txt"

    def _read(self) -> None:
        """Load the ids (cheap) and map the matrix (lazy) as they are on disk, after checking
        the blocks this process has not checked yet; no generation when there is no usable
        cache (none, another model's, or a damaged one: logged)."""
        self.ids, self.position, self._matrix, self._generation = [], {}, None, ""
        self._ids_bytes = self._sums_bytes = 0
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
            dim, identity = int(state["dim"]), str(state["identity"])
            generation = str(state["generation"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if dim != self.dim or identity != self.identity or dim <= 0:
            return
        self._generation = generation
        try:
            sums_raw = self._sums_path.read_bytes()
            ids_raw = self._ids_path.read_bytes()
            size = self._vectors_path.stat().st_size
        except OSError:  # a cache of an older kbterm (no sums) or none: rebuilt
            self._generation = ""
            return
        problem = self._verify(sums_raw, ids_raw, size)
        if problem:
            log.warning("the vector cache in %s is damaged (%s): building it again from the "
                        "index", self.folder, problem)
            self._generation = ""
            return
        try:
            ids = ids_raw[:self._ids_bytes].decode("utf-8").split("\n")[:-1]
        except UnicodeDecodeError:  # pragma: no cover - the checksum covers the ids
            self._generation = ""
            return
        self.ids = ids
        self.position = {i: n for n, i in enumerate(ids)}

    def _verify(self, sums_raw: bytes, ids_raw: bytes, size: int) -> str:
        """Check the blocks listed in sums.txt (those not checked yet); '' or what is wrong.
        Sets the committed lengths (:attr:`_ids_bytes`, :attr:`_sums_bytes`)."""
        blocks: list[tuple[int, int, int]] = []
        end = sums_raw.rfind(b"\n") + 1  # a torn last line does not count
        try:
            for line in sums_raw[:end].decode("ascii").splitlines():
                rows, nbytes, crc = line.split()
                blocks.append((int(rows), int(nbytes), int(crc, 16)))
        except ValueError:
            return "its checksum list is garbled"
        rows, nbytes = (blocks[-1][0], blocks[-1][1]) if blocks else (0, 0)
        if size < rows * 2 * self.dim or len(ids_raw) < nbytes:
            return "a file is cut short"
        checked_generation, checked_rows = self._verified
        matrix = np.memmap(self._vectors_path, dtype=np.float16, mode="r",
                           shape=(rows, self.dim)) if rows else None
        prev_rows = prev_bytes = 0
        for block_rows, block_bytes, crc in blocks:
            if block_rows < prev_rows or block_bytes < prev_bytes:
                return "its checksum list is garbled"
            if self._generation != checked_generation or block_rows > checked_rows:
                value = zlib.crc32(matrix[prev_rows:block_rows]) if block_rows > prev_rows \
                    else 0
                value = zlib.crc32(ids_raw[prev_bytes:block_bytes], value)
                if value != crc:
                    return f"a checksum does not match in rows {prev_rows}-{block_rows}"
            prev_rows, prev_bytes = block_rows, block_bytes
        if ids_raw[:nbytes].count(b"\n") != rows:
            return "its ids do not match its vectors"
        del matrix
        self._ids_bytes, self._sums_bytes = nbytes, end
        self._verified = (self._generation, rows)
        return ""

    def matrix(self) -> np.ndarray:
        """The (rows x dim) float16 matrix, memory-mapped (or in memory, see ``_memory``)."""
        if self._memory is not None:
            return self._memory
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
        if (dim, identity) != (self.dim, self.identity):
            self._memory = None  # another index (rebuilt): try the folder again
        self.dim, self.identity = dim, identity
        if self._memory is not None:
            self._sync_memory(live_ids)
        else:
            lock = self._open_lock()
            try:
                self._sync_files(live_ids, lock)
            finally:
                if lock is not None:
                    lock.close()
        # -1: a chunk whose vector was gone when fetched (a writer replaced it meanwhile).
        return np.fromiter((self.position.get(i, -1) for i in live_ids), dtype=np.int64,
                           count=len(live_ids))

    def _open_lock(self) -> Any:
        """The cache's lock file, open for writing; or for reading only (None: not even that)
        when the folder cannot be written."""
        if self.read_only:
            self._unwritable = "read-only (kbterm mcp)"
        else:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                return open(self.folder / "lock", "a+")
            except OSError as exc:
                if not (is_not_writable(exc) or is_disk_full(exc)):
                    raise
                self._unwritable = exc.strerror or str(exc)
        try:
            return open(self.folder / "lock", "r")
        except OSError:
            return None

    def _sync_files(self, live_ids: Sequence[str], lock: Any) -> None:
        import fcntl

        writable = lock is not None and lock.mode != "r"
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX if writable else fcntl.LOCK_SH)
        try:
            self._read()
            missing = [i for i in live_ids if i not in self.position]
            dead = len(self.ids) - (len(live_ids) - len(missing))
            stale = not self._generation or \
                dead > COMPACT_DEAD_FRACTION * (len(self.ids) + len(missing))
            if not (stale or missing):
                return  # nothing to write: a read-only folder serves as it is
            if not writable:
                raise PermissionError(errno.EROFS, self._unwritable or os.strerror(errno.EROFS))
            if stale:
                self._rewrite(live_ids)
            else:
                self._append(missing)
        except OSError as exc:
            if not (is_not_writable(exc) or is_disk_full(exc)):
                raise
            # Nothing needs writing for a search: the vectors are held in memory instead.
            log.info("the vector cache in %s cannot be written (%s): searching from memory",
                     self.folder, exc.strerror or exc)
            self._to_memory(live_ids)
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _to_memory(self, live_ids: Sequence[str]) -> None:
        """Hold the live vectors in memory: those the cache on disk has, the rest fetched."""
        have = [i for i in live_ids if i in self.position] if self._generation else []
        parts = [np.asarray(self.matrix()[[self.position[i] for i in have]])] if have else []
        got, vectors = self._fetch([i for i in live_ids if i not in set(have)])
        self._memory = np.ascontiguousarray(
            np.concatenate(parts + [vectors]) if parts else vectors, dtype=np.float16)
        self.ids = have + got
        self.position = {i: n for n, i in enumerate(self.ids)}
        self._generation, self._matrix = "", None

    def _sync_memory(self, live_ids: Sequence[str]) -> None:
        missing = [i for i in live_ids if i not in self.position]
        dead = len(self.ids) - (len(live_ids) - len(missing))
        if dead > COMPACT_DEAD_FRACTION * (len(self.ids) + len(missing)):
            keep = [i for i in live_ids if i in self.position]
            assert self._memory is not None
            self._memory = np.ascontiguousarray(self._memory[[self.position[i] for i in keep]])
            self.ids = keep
            self.position = {i: n for n, i in enumerate(keep)}
        if missing:
            got, vectors = self._fetch(missing)
            if got:
                self._memory = np.concatenate([self.matrix(), vectors])
                for i in got:
                    self.position[i] = len(self.ids)
                    self.ids.append(i)

    def _fetch(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Vectors of ``ids`` from the table (all rows when that is most of them)."""
        table = self.store.chunks_table
        if table is None or not ids:
            return [], np.zeros((0, self.dim), dtype=np.float16)
        wanted = set(ids)
        parts: list[Any] = []
        if len(ids) > table.count_rows() // 4:
            parts.append(self.store._read(CHUNKS, lambda: self.store.chunks_table.search()
                                          .select(["id", "vector"]).limit(None).to_arrow()))
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
        vector_bytes = np.ascontiguousarray(vectors).tobytes()
        id_bytes = "".join(i + "\n" for i in got).encode("utf-8")
        rows = len(self.ids) + len(got)
        nbytes = self._ids_bytes + len(id_bytes)
        crc = zlib.crc32(id_bytes, zlib.crc32(vector_bytes))
        with open(self._vectors_path, "r+b") as fh:
            fh.truncate(len(self.ids) * 2 * self.dim)  # drop a torn append's extra bytes
            fh.seek(0, os.SEEK_END)
            fh.write(vector_bytes)
        with open(self._ids_path, "r+b") as fh:
            fh.truncate(self._ids_bytes)
            fh.seek(0, os.SEEK_END)
            fh.write(id_bytes)
        line = f"{rows} {nbytes} {crc:08x}\n".encode("ascii")
        with open(self._sums_path, "r+b") as fh:  # this line commits the block
            fh.truncate(self._sums_bytes)
            fh.seek(0, os.SEEK_END)
            fh.write(line)
        self._ids_bytes, self._sums_bytes = nbytes, self._sums_bytes + len(line)
        for i in got:
            self.position[i] = len(self.ids)
            self.ids.append(i)
        self._verified = (self._generation, rows)
        self._matrix = None

    def _rewrite(self, ids: Sequence[str]) -> None:
        import shutil
        import uuid

        got, vectors = self._fetch(ids)
        generation = f"v-{uuid.uuid4().hex[:12]}"
        folder = self.folder / generation
        state = self.folder / f".state.{os.getpid()}.tmp"
        vector_bytes = np.ascontiguousarray(vectors).tobytes()
        id_bytes = "".join(i + "\n" for i in got).encode("utf-8")
        crc = zlib.crc32(id_bytes, zlib.crc32(vector_bytes))
        try:
            folder.mkdir()
            (folder / "vectors.f16").write_bytes(vector_bytes)
            (folder / "ids.txt").write_bytes(id_bytes)
            (folder / "sums.txt").write_text(f"{len(got)} {len(id_bytes)} {crc:08x}\n",
                                             encoding="ascii")
            state.write_text(json.dumps({"dim": self.dim, "identity": self.identity,
                                         "generation": generation}), encoding="utf-8")
            os.replace(state, self._state_path)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            try:
                state.unlink(missing_ok=True)
            except OSError:
                pass
            raise
        # Processes that mapped an old generation keep its inodes until they refresh.
        for old in self.folder.glob("v-*"):
            if old.name != generation:
                shutil.rmtree(old, ignore_errors=True)
        self._generation = generation
        self.ids = list(got)
        self.position = {i: n for n, i in enumerate(got)}
        self._ids_bytes = len(id_bytes)
        self._sums_bytes = len(f"{len(got)} {len(id_bytes)} {crc:08x}\n")
        self._verified = (generation, len(got))
        self._matrix = None


# Matrix elements from which torch's kernel is worth importing torch (about 1.5 s) for: a
# fresh `kbterm search` against a model server must not pay that on a small index.
TORCH_ELEMENTS = 64 * 1024 * 1024


def _torch(matrix: np.ndarray) -> Any:
    """torch, if it is loaded already (a model runs in process) or the matrix is big enough
    to repay importing it; else None (NumPy does the product)."""
    import sys

    if "torch" not in sys.modules and matrix.size < TORCH_ELEMENTS:
        return None
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; kept for slim installs
        return None
    return torch


def scores(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine of ``query`` (unit, float32) with every row of ``matrix`` (float16), as float32.

    torch's float16 matrix-vector kernel reads the matrix once (memory-bound, multi-threaded);
    without torch, NumPy works through float32 blocks (slower, same result)."""
    if matrix.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    torch = _torch(matrix)
    if torch is None:
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
    torch = _torch(matrix)
    if torch is None:
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
