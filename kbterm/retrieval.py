"""Retrieval: a query (text, an image or a video clip, or both) in, ranked hits out.

1. The query is embedded with the *query* instruction (``models.embedder.query_instruction``):
   documents were embedded with the document instruction, and the model is asymmetric.
2. Candidates: exact cosine search over the live chunk vectors (:mod:`kbterm.vectors`) and
   LanceDB's full-text (BM25) index over chunk text, each taking ``search.candidates`` hits,
   fused by reciprocal rank fusion (``1 / (60 + rank)`` summed over the lists a hit is in).
3. Filters (path or folder glob, file type, modality, modified after/before) apply to both
   lists before fusion, so ``-k 10`` means ten hits that pass them.
4. The best ``search.rerank`` fused candidates are scored by Qwen3-VL-Reranker (batched) and
   put first in rerank order; the rest follow in fused order.  Each hit keeps both scores.

A text hit's snippet is the passage around the query's words; a visual hit carries the image
to show: the image file, the video segment's keyframe, or the PDF page rendered (and cached).

If the embedder cannot be loaded, search falls back to keyword search and says so once
(:attr:`Results.warnings`).  Nothing here imports textual; torch loads with the first model.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from kbterm.errors import InputError, KbtermError
from kbterm.ingest.base import clock
from kbterm.keywords import term_spans
from kbterm.querycache import QueryVectors, file_digest
from kbterm.scan import within
from kbterm.store import STATUS_INDEXED, IndexDamaged, Store
from kbterm.vectors import VectorCache, nearest

if TYPE_CHECKING:
    from kbterm.config import Config
    from kbterm.backends.base import EmbeddingBackend, RerankBackend

log = logging.getLogger(__name__)

RRF_K = 60
META_COLUMNS = ["id", "path", "file_type", "modality", "title", "page", "line_start",
                "line_end", "start_s", "end_s", "preview"]
SNIPPET_CHARS = 240
CONTEXT_LINES = 8  # lines shown before and after a text hit in a preview
CONTEXT_LINE_CHARS = 500


class NoIndex(KbtermError):
    """There is nothing to search yet."""


@dataclass
class Filters:
    """Which chunks a search may return (empty fields: no restriction)."""

    paths: tuple[str, ...] = ()  # globs on the full path; a folder matches what is under it
    types: tuple[str, ...] = ()  # file types: text markdown html json pdf image video
    modalities: tuple[str, ...] = ()  # text image video
    modified_after: float | None = None  # epoch seconds
    modified_before: float | None = None

    def active(self) -> bool:
        return bool(self.paths or self.types or self.modalities
                    or self.modified_after is not None or self.modified_before is not None)

    def match_path(self, path: str) -> bool:
        if not self.paths:
            return True
        for pattern in self.paths:
            p = os.path.expanduser(pattern)
            if not _has_glob(pattern):
                if within(path, [os.path.abspath(p)]):
                    return True
            elif fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, "*/" + p):
                return True
        return False


WHEN_FORMATS = "use a date (2026-11-01), a date and time (2026-11-01T14:30) or an age (7d, 12h)"


def parse_when(value: str, name: str = "date") -> float:
    """Epoch seconds of ``2026-11-01``, ``2026-11-01T14:30`` or an age (``7d``, ``12h``,
    ``30m``, ``2w``: that long ago)."""
    m = re.fullmatch(r"(\d+)\s*([dhmw])", value.strip())
    if m:
        unit = {"m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return time.time() - int(m.group(1)) * unit
    try:
        return dt.datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        raise InputError(f"{name}: {value!r} is not a date: {WHEN_FORMATS}") from None


@dataclass
class Context:
    """Source lines around a text hit (``lines[0]`` is line ``first_line``)."""

    first_line: int
    lines: list[str]
    hit_start: int
    hit_end: int


def _read_lines(path: Path, first: int, last: int) -> list[str]:
    """Lines ``first``..``last`` (1-based) of a text file, decoded and split as the indexer
    does (so line numbers agree), each cut at ``CONTEXT_LINE_CHARS``."""
    from kbterm.ingest.text import open_text

    _, pieces = open_text(path)
    out: list[str] = []
    number, partial = 1, ""
    for piece in pieces:
        parts = (partial + piece).split("\n")
        partial = parts.pop()
        for line in parts:
            if number >= first:
                out.append(line.rstrip("\r")[:CONTEXT_LINE_CHARS])
            number += 1
            if number > last:
                return out
        partial = partial[: CONTEXT_LINE_CHARS * 4]  # a huge line is cut, not held whole
    if number >= first and partial:
        out.append(partial.rstrip("\r")[:CONTEXT_LINE_CHARS])
    return out


def _has_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


@dataclass
class Hit:
    """One result: a chunk, why it was found, and where it comes from."""

    rank: int
    id: str
    path: str
    file_type: str
    modality: str
    content: str  # the chunk's text (text hits), or a description of the visual chunk
    snippet: str
    title: str = ""
    page: int | None = None
    line_start: int | None = None
    line_end: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    image_path: str | None = None  # what to show for a visual hit
    embedding_score: float | None = None  # cosine similarity with the query
    keyword_score: float | None = None  # BM25
    fused_score: float = 0.0  # reciprocal rank fusion
    rerank_score: float | None = None  # Qwen3-VL-Reranker, in (0, 1)

    def citation(self) -> str:
        """``report.pdf, page 12`` / ``talk.mp4 @ 01:23-01:53`` / ``notes.md, lines 4-9``."""
        name = os.path.basename(self.path)
        if self.page is not None:
            return f"{name}, page {self.page}"
        if self.start_s is not None:
            return f"{name} @ {clock(self.start_s)}-{clock(self.end_s or self.start_s)}"
        if self.line_start is not None:
            if self.line_end and self.line_end != self.line_start:
                return f"{name}, lines {self.line_start}-{self.line_end}"
            return f"{name}, line {self.line_start}"
        return name

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "id": self.id, "content": self.content,
            "embedding_score": self.embedding_score, "rerank_score": self.rerank_score,
            "keyword_score": self.keyword_score, "fused_score": self.fused_score,
            "metadata": {
                "source": self.path, "file_type": self.file_type, "modality": self.modality,
                "title": self.title, "page": self.page, "line_start": self.line_start,
                "line_end": self.line_end, "start_s": self.start_s, "end_s": self.end_s,
                "image_path": self.image_path, "citation": self.citation(),
            },
        }


@dataclass
class Results:
    query: str
    medium: Any = field(default=None, repr=False)  # the query's picture (a path) or clip
    hits: list[Hit] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    reranked: int = 0
    # "keywords" (BM25 only: no model call yet), "fused" (vectors and keywords) or
    # "reranked"; the TUI shows each as it comes, kbterm search only the last.
    stage: str = "fused"
    rerank_candidates: int = 0  # the candidates the reranker was to see (``reranked``: did)

    @property
    def image(self) -> str | None:
        """The query's picture or clip, as shown: its path (and a clip's time range)."""
        return describe_medium(self.medium)

    @property
    def total_ms(self) -> float:
        return sum(self.timings_ms.values())

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "results": [h.to_json() for h in self.hits],
                "total_time_ms": round(self.total_ms, 1),
                "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
                "warnings": self.warnings}


class Searcher:
    """Searches the index of ``config``'s data folder (reuse it: it keeps the vectors mapped)."""

    def __init__(self, config: "Config", *, embedder: "EmbeddingBackend | None" = None,
                 reranker: "RerankBackend | None" = None, read_only: bool = False) -> None:
        self.config = config
        self.store = Store(config.data_path)
        # read_only: nothing is written to the data folder (kbterm mcp): the vector cache is
        # held in memory when it lacks rows, pages are drawn into a temporary folder, and
        # rerank costs are not kept.
        self.read_only = read_only
        self.cache = VectorCache(self.store, read_only=read_only)
        self._pages_dir: Path | None = None
        self._embedder = embedder
        self._reranker = reranker
        self._version: tuple[float, int, int] | None = None
        self._built_at: float | None = None  # meta.json's created_at as last read
        self._meta: list[dict[str, Any]] = []
        self._rows = np.zeros(0, dtype=np.int64)  # matrix row of each live chunk
        self._mtime: dict[str, int] = {}
        self._has_fts = False
        self._keyword_column: str | None = None
        self.query_vectors = QueryVectors()  # (this searcher's embedder's vectors)
        self._index_of: dict[str, int] = {}
        self._file_of: np.ndarray | None = None  # file of each live chunk (filters)
        self._files: np.ndarray = np.zeros(0, dtype=object)
        self._file_types: dict[str, str] = {}
        self._modality: np.ndarray = np.zeros(0, dtype=object)
        # One refresh or candidate search at a time: the TUI warms the cache in one thread
        # while it searches in another, and the chunk list, its index and the matrix rows
        # must come from the same refresh.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ models

    @property
    def embedder(self) -> "EmbeddingBackend":
        if self._embedder is None:
            from kbterm.backends import get_embedder

            self._embedder = get_embedder(self.config)
        return self._embedder

    @property
    def reranker(self) -> "RerankBackend":
        if self._reranker is None:
            from kbterm.backends import get_reranker

            self._reranker = get_reranker(self.config)
        return self._reranker

    # ------------------------------------------------------------------ index state

    def refresh(self) -> None:
        """Catch up with the index (cheap when nothing changed)."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        # An index rebuilt under this process (kbterm index --rebuild) has new tables whose
        # version numbers start again and may equal the old ones: meta.json's created_at tells
        # them apart, and the old tables' handles are dropped.
        meta = self.store.read_meta()
        built_at = meta.created_at if meta is not None else 0.0
        if self._built_at is not None and built_at != self._built_at:
            self.store.reopen()
            self.query_vectors.clear()  # (built again: maybe with another model or dimension)
        self._built_at = built_at
        chunks, files = self.store.chunks_table, self.store.files_table
        if chunks is None or files is None:
            raise NoIndex(f"no index yet in {self.store.data_dir}: run kbterm index FOLDER "
                          "(or kbterm watch)")
        version = (built_at, chunks.version, files.version)
        if version == self._version:
            return
        ledger = self.store.ledger()
        meta_rows = self.store.live_chunks(META_COLUMNS, ledger=ledger)
        dim = meta.dimension if meta is not None else 0
        identity = f"{meta.embedding_model}:{meta.created_at}" if meta is not None else ""
        rows = self.cache.sync([r["id"] for r in meta_rows], dim, identity)
        present = rows >= 0
        if not present.all():  # replaced while we read: the next refresh sees the new rows
            meta_rows = [r for r, ok in zip(meta_rows, present) if ok]
            rows = rows[present]
        self._rows = rows
        self._meta = meta_rows
        self._index_of = {r["id"]: n for n, r in enumerate(meta_rows)}
        self._file_of = None
        # Once per index change, not per query.
        self._keyword_column = self.store.keyword_column()
        self._has_fts = self._keyword_column is not None
        self._mtime = {r.path: r.mtime_ns for r in ledger.values()
                       if r.status == STATUS_INDEXED}
        self._version = version

    def chunk_rows(self) -> list[dict[str, Any]]:
        """Every live chunk's metadata (:data:`META_COLUMNS`), as the index is now."""
        with self._lock:
            self.refresh()
            return list(self._meta)

    def hit(self, chunk_id: str) -> Hit | None:
        """The live chunk ``chunk_id`` as a hit (no scores: not found by a query), or None."""
        with self._lock:
            self.refresh()
            n = self._index_of.get(chunk_id)
            return None if n is None else self._hits([(n, None, None, 0.0)], "")[0]

    @property
    def chunk_count(self) -> int:
        return len(self._meta)

    @property
    def file_count(self) -> int:
        """Files indexed (as of the last :meth:`refresh`)."""
        return len(self._mtime)

    def context(self, hit: Hit, lines: int = CONTEXT_LINES) -> Context | None:
        """The source lines around a text hit, read from the file as it was indexed (None when
        the hit has no line range, or the file changed or went away since)."""
        if hit.modality != "text" or hit.line_start is None:
            return None
        first = max(1, hit.line_start - lines)
        last = (hit.line_end or hit.line_start) + lines
        try:
            if os.stat(hit.path).st_mtime_ns != self._mtime.get(hit.path):
                return None  # changed since it was indexed: its line numbers may be off
            out = _read_lines(Path(hit.path), first, last)
        except (OSError, KbtermError):
            return None
        if len(out) < (hit.line_start - first) + 1:
            return None  # shorter than the index says
        return Context(first_line=first, lines=out, hit_start=hit.line_start,
                       hit_end=hit.line_end or hit.line_start)

    def _allowed(self, filters: Filters) -> np.ndarray | None:
        """Mask over the live chunks that pass ``filters`` (None: all pass).  Decided per
        file, then spread to its chunks: cheap at 100,000 chunks."""
        if not filters.active():
            return None
        if self._file_of is None:
            paths = [r["path"] for r in self._meta]
            self._files, self._file_of = np.unique(np.asarray(paths, dtype=object),
                                                   return_inverse=True)
            self._file_types = {r["path"]: r["file_type"] for r in self._meta}
            self._modality = np.asarray([r["modality"] for r in self._meta], dtype=object)
        after, before = filters.modified_after, filters.modified_before
        keep_file = np.zeros(len(self._files), dtype=bool)
        for n, path in enumerate(self._files):
            if filters.types and self._file_types[path] not in filters.types:
                continue
            mtime = self._mtime.get(path, 0) / 1e9
            if after is not None and mtime < after:
                continue
            if before is not None and mtime >= before:
                continue
            keep_file[n] = filters.match_path(path)
        mask = keep_file[self._file_of]
        if filters.modalities:
            mask &= np.isin(self._modality, list(filters.modalities))
        return mask

    # ------------------------------------------------------------------ search

    def search(self, text: str = "", image: "Medium | None" = None, *, k: int = 10,
               rerank: bool = True, filters: Filters | None = None,
               candidates: int | None = None) -> Results:
        """Ranked hits for ``text`` and/or ``image`` (a picture's path, or a
        :class:`~kbterm.models.inputs.Video` clip): :meth:`retrieve`, then :meth:`rerank`."""
        results = self.retrieve(text, image, k=k, rerank=rerank, filters=filters,
                                candidates=candidates)
        return self.rerank(results, k=k, enabled=rerank)

    def retrieve(self, text: str = "", image: "Medium | None" = None, *, k: int = 10,
                 rerank: bool = True, filters: Filters | None = None,
                 candidates: int | None = None, keywords_only: bool = False) -> Results:
        """Fused vector + keyword hits, not reranked yet: the best ``k`` (or, when ``rerank``,
        the ``search.rerank`` candidates the reranker will see, if more).  The TUI shows these
        at once and re-sorts when :meth:`rerank` returns.

        ``keywords_only``: the BM25 hits of the text alone, without embedding the query (no
        model call: the TUI's first list, the moment the user stops typing)."""
        if not text.strip() and image is None:
            raise InputError("empty query: give text, an image (--image) or a video (--video), "
                             "or both")
        if image is not None and not medium_path(image).is_file():
            raise InputError(f"{medium_path(image)}: no such file")
        with self._lock:
            return self._retrieve(text, image, k=k, rerank=rerank, filters=filters,
                                  candidates=candidates, keywords_only=keywords_only)

    def _retrieve(self, text: str, image: "Medium | None", *, k: int, rerank: bool,
                  filters: Filters | None, candidates: int | None,
                  keywords_only: bool = False) -> Results:
        filters = filters or Filters()
        results = Results(query=text, medium=image)
        t = time.perf_counter()
        self.refresh()
        results.timings_ms["refresh"] = (time.perf_counter() - t) * 1000
        n_candidates = candidates or self.config.search.candidates
        allowed = self._allowed(filters)

        vector_list: list[tuple[int, float]] = []
        t = time.perf_counter()
        query_vector = None
        if keywords_only:
            results.stage = "keywords"
        else:
            try:
                query_vector = self._embed_query(text, image)
            except KbtermError as exc:
                if not text.strip() or isinstance(exc, InputError):
                    raise
                results.warnings.append(f"embedding model unavailable ({exc}); "
                                        "showing keyword matches only")
            results.timings_ms["embed"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        if query_vector is not None and len(self._meta):
            vector_list = nearest(self.cache.matrix(), self._rows, query_vector,
                                  n_candidates, allowed)
        keyword_list: list[tuple[int, float]] = []
        if text.strip():
            try:
                keyword_list = self._keyword(text, n_candidates, allowed)
            except IndexDamaged as exc:  # the keyword index only: vectors still answer
                results.warnings.append(f"keyword search unavailable: {exc}")
        fused = self._fuse(vector_list, keyword_list)
        results.timings_ms["retrieve"] = (time.perf_counter() - t) * 1000
        # The reranker sees the best search.rerank fused candidates even when fewer results
        # are asked for: it may promote the 15th to the top.
        n_rerank = self.config.search.rerank if rerank else 0
        results.hits = self._hits(fused[: max(k, n_rerank)], text)
        for rank, hit in enumerate(results.hits, start=1):
            hit.rank = rank
        return results

    def rerank(self, results: Results, *, k: int = 10, enabled: bool = True,
               cancel: threading.Event | None = None, budget_ms: int = 0) -> Results:
        """Rerank the head of ``results`` (from :meth:`retrieve`) and keep the best ``k``.

        ``cancel``: set it to stop between reranker batches (raises
        :class:`~kbterm.errors.Cancelled`; ``results`` is then left as it was).
        ``budget_ms`` (the TUI's ``tui.rerank_budget_ms``; 0: none): rerank only the candidates
        that fit in it on this host, texts before pictures (:meth:`_within_budget`); the rest
        follow in fused order and ``results.rerank_candidates`` says how many there were."""
        hits = list(results.hits)
        t = time.perf_counter()
        n_rerank = min(self.config.search.rerank, len(hits)) if enabled else 0
        results.rerank_candidates = n_rerank
        # (A first call that loads the model, or connects, would overstate a pair's cost.)
        warm = n_rerank > 0 and budget_ms > 0 and (self.reranker.loaded
                                                   or self.reranker.calls > 0)
        if n_rerank:
            try:
                if budget_ms:
                    hits, n_rerank = self._within_budget(hits, n_rerank, budget_ms / 1000)
                if n_rerank:
                    skipped = self._rerank(results.query, results.medium, hits, n_rerank,
                                           cancel)
                    results.reranked = min(n_rerank, k)
                    results.warnings.extend(skipped)
            except KbtermError as exc:
                results.warnings.append(f"reranker unavailable ({exc}); results not reranked")
                n_rerank = 0
        results.timings_ms["rerank"] = (time.perf_counter() - t) * 1000
        if warm and n_rerank and all(h.modality == "text" for h in hits[:n_rerank]):
            self._learn_rerank_cost(results.timings_ms["rerank"] / 1000 / n_rerank)
        hits = hits[:k]
        for rank, hit in enumerate(hits, start=1):
            hit.rank = rank
        results.hits = hits
        return results

    def _within_budget(self, hits: list[Hit], n: int, budget_s: float) -> tuple[list[Hit], int]:
        """The first ``n`` hits reordered so that those the reranker can score within
        ``budget_s`` come first (texts, then pictures, each in fused order), and how many they
        are; all ``n`` when the cost of a pair on this host was never measured."""
        from kbterm.backends.latency import expected

        per_pair = expected(self.config.data_path, "reranker", self.reranker.host())
        if not per_pair:
            return hits, n
        head = hits[:n]
        order = [h for h in head if h.modality == "text"] + \
            [h for h in head if h.modality != "text"]
        chosen: list[Hit] = []
        spent = 0.0
        for hit in order:
            cost = per_pair * (1 if hit.modality == "text" else PICTURE_PAIR_COST)
            if spent + cost > budget_s:
                break  # (texts come first: a picture after them costs more still)
            chosen.append(hit)
            spent += cost
        picked = {id(h) for h in chosen}
        rest = [h for h in head if id(h) not in picked]
        return chosen + rest + hits[n:], len(chosen)

    def _learn_rerank_cost(self, per_pair: float) -> None:
        """Keep the cost of one text pair on this host, measured by a real rerank, when none
        was measured yet (``kbterm doctor --load`` and ``kbterm serve`` measure it too)."""
        from kbterm.backends.latency import expected, record

        if self.read_only:
            return
        try:
            host = self.reranker.host()
            if expected(self.config.data_path, "reranker", host) is None:
                record(self.config.data_path, "reranker", host, per_pair)
        except (OSError, KbtermError):
            pass  # a read-only data folder: measured again next time

    def _embed_query(self, text: str, image: "Medium | None") -> np.ndarray:
        instruction = self.config.models.embedder.query_instruction
        # (A picture by its bytes wherever it lies; a clip by its bytes and its span.)
        media = (file_digest(medium_path(image)), getattr(image, "start", None),
                 getattr(image, "end", None)) if image is not None else ()
        key = self.query_vectors.key(text, instruction, media)
        vector = self.query_vectors.get(key)
        if vector is None:
            vector = self.embedder.embed([query_item(text, image)], instruction=instruction)[0]
            vector = np.asarray(vector, dtype=np.float32)
            self.query_vectors.put(key, vector)
        if self.cache.dim and len(vector) != self.cache.dim:
            raise KbtermError(f"the query embedding has {len(vector)} values but the index "
                              f"holds {self.cache.dim}: run kbterm index --rebuild")
        return vector

    def _keyword(self, text: str, limit: int, allowed: np.ndarray | None
                 ) -> list[tuple[int, float]]:
        if not self._has_fts:
            return []
        want = limit if allowed is None else limit * 4
        # (IndexDamaged: the caller says so.)
        rows = self.store.keyword_search(text, want, self._keyword_column)
        out = []
        for row in rows:
            n = self._index_of.get(row["id"])
            if n is None or (allowed is not None and not allowed[n]):
                continue  # not live (a file being replaced) or filtered out
            out.append((n, float(row["_score"])))
        out.sort(key=lambda item: (-item[1], item[0]))  # equal scores: a stable order
        return out[:limit]

    def _fuse(self, vector_list: list[tuple[int, float]], keyword_list: list[tuple[int, float]]
              ) -> list[tuple[int, float | None, float | None, float]]:
        """(chunk, cosine, bm25, rrf score) best first."""
        fused: dict[int, list[Any]] = {}
        for rank, (n, score) in enumerate(vector_list, start=1):
            entry = fused.setdefault(n, [None, None, 0.0])
            entry[0] = score
            entry[2] += 1.0 / (RRF_K + rank)
        for rank, (n, score) in enumerate(keyword_list, start=1):
            entry = fused.setdefault(n, [None, None, 0.0])
            entry[1] = score
            entry[2] += 1.0 / (RRF_K + rank)
        order = sorted(fused.items(), key=lambda item: (-item[1][2], item[0]))
        return [(n, e[0], e[1], e[2]) for n, e in order]

    def _hits(self, top: list[tuple[int, float | None, float | None, float]],
              query: str) -> list[Hit]:
        texts = self._texts([self._meta[n]["id"] for n, *_ in top])
        hits = []
        for n, cosine, bm25, fused in top:
            r = self._meta[n]
            text = texts.get(r["id"], "")
            hit = Hit(
                rank=0, id=r["id"], path=r["path"], file_type=r["file_type"],
                modality=r["modality"], content=text, snippet="", title=r["title"] or "",
                page=r["page"], line_start=r["line_start"], line_end=r["line_end"],
                start_s=r["start_s"], end_s=r["end_s"], embedding_score=cosine,
                keyword_score=bm25, fused_score=fused,
            )
            if hit.modality == "text":
                hit.snippet = snippet(text, query)
            else:
                hit.content = f"[{hit.modality}] {hit.citation()}"
                hit.snippet = hit.title or os.path.basename(hit.path)
                hit.image_path = self._image_for(hit, r.get("preview") or "")
            hits.append(hit)
        return hits

    def _texts(self, ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for data in self.store.chunks_by_id(ids, ["id", "text"]):
            for row in data.to_pylist():
                out[row["id"]] = row["text"] or ""
        return out

    def image_for(self, hit: Hit) -> str | None:
        """The image to show for ``hit``: its own (a photo, a keyframe, a rendered page), or
        for a PDF text hit its page, rendered at the model's size and cached."""
        if hit.image_path:
            return hit.image_path
        if hit.file_type == "pdf" and hit.page is not None:
            return self._image_for(hit, "")
        return None

    def _image_for(self, hit: Hit, preview: str) -> str | None:
        if hit.modality == "video":
            return preview or None
        if hit.file_type == "pdf" and hit.page is not None:
            try:
                return str(page_image(self._pages_base(), hit.path, hit.page,
                                      self._mtime.get(hit.path, 0)))
            except Exception as exc:  # noqa: BLE001 - the file changed or went away
                log.debug("cannot render %s page %s: %s", hit.path, hit.page, exc)
                return None
        return hit.path

    def _pages_base(self) -> Path:
        """Where rendered pages are kept: the data folder, or (read-only) a temporary folder
        removed when the process ends."""
        if not self.read_only:
            return self.store.data_dir
        if self._pages_dir is None:
            import atexit
            import shutil
            import tempfile

            self._pages_dir = Path(tempfile.mkdtemp(prefix="kbterm-pages-"))
            atexit.register(shutil.rmtree, self._pages_dir, ignore_errors=True)
        return self._pages_dir

    def _rerank(self, text: str, image: "Medium | None", hits: list[Hit], n: int,
                cancel: threading.Event | None = None) -> list[str]:
        """Score and re-sort the first ``n`` hits; a hit whose picture cannot be read keeps no
        rerank score and goes after the scored ones.  Returns a warning for each of those."""
        from kbterm.models.inputs import Image

        documents: list[Any] = []
        for hit in hits[:n]:
            if hit.modality == "text" or not hit.image_path:
                documents.append(hit.content or hit.snippet)
            else:
                documents.append(Image(Path(hit.image_path)))
        unreadable: dict[int, str] = {}
        values = self.reranker.score(query_item(text, image), documents, cancel=cancel,
                                     unreadable=unreadable)
        skipped = [f"not reranked (its picture cannot be read): {reason}"
                   for _i, reason in sorted(unreadable.items())]
        for hit, value in zip(hits[:n], values):
            hit.rerank_score = None if value is None else float(value)
        head = sorted(hits[:n], key=lambda h: (h.rerank_score is None, -(h.rerank_score or 0.0)))
        hits[:n] = head
        return skipped


# A picture pair costs about this many text pairs in the reranker: a page or photo is up to
# 1,280 visual tokens at the contract's reranker limit, a passage about 200 with the query.
PICTURE_PAIR_COST = 6


# A query's picture (a path) or clip (:class:`~kbterm.models.inputs.Video`, a file and
# optionally the start..end seconds of it, embedded at the contract's 1 fps, <= 64 frames).
Medium = Any


def medium_path(image: "Medium") -> Path:
    """The file of a query's picture or clip."""
    return Path(getattr(image, "source", image))


def describe_medium(image: "Medium | None") -> str | None:
    """A query's picture or clip as shown: its path, and a clip's time range."""
    if image is None:
        return None
    start, end = getattr(image, "start", None), getattr(image, "end", None)
    if start is None and end is None:
        return str(medium_path(image))
    span = f"{start or 0:g}-{end:g} s" if end is not None else f"from {start:g} s"
    return f"{medium_path(image)} ({span})"


def query_item(text: str, image: "Medium | None") -> Any:
    """The model input of a query: its picture or clip, and/or its text."""
    from kbterm.models.inputs import Image, Video

    parts: list[Any] = []
    if isinstance(image, Video):
        parts.append(image)
    elif image is not None:
        parts.append(Image(Path(image)))
    if text.strip():
        parts.append(text)
    return parts[0] if len(parts) == 1 else parts


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """The part of ``text`` around the first of the query's words it contains."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    spans = term_spans(flat, query)
    at = spans[0][0] if spans else 0
    start = max(0, min(at - width // 3, len(flat) - width))
    out = flat[start:start + width]
    return ("…" if start > 0 else "") + out.strip() + ("…" if start + width < len(flat) else "")


def page_image(data_dir: Path, path: str, page: int, mtime_ns: int = 0) -> Path:
    """The PDF page rendered as the model sees it, cached in ``<data>/cache/pages``."""
    import hashlib

    from kbterm.ingest.pdf import _open, render_page
    from kbterm.models.encoding import IMAGE_MAX_PIXELS

    key = hashlib.blake2b(f"{path}\0{mtime_ns}".encode("utf-8", "surrogatepass"),
                          digest_size=10).hexdigest()
    name = f"{key}-p{page:05d}.png"
    out = Path(data_dir) / "cache" / "pages" / name
    if out.exists():
        return out
    doc = _open(Path(path))
    try:
        image = render_page(doc[page - 1], IMAGE_MAX_PIXELS)
    finally:
        doc.close()
    try:
        return _save_png(image, out)
    except OSError as exc:
        # A read-only data folder (or a full disk): a private temporary folder will do.
        import tempfile

        log.debug("cannot cache page images in %s (%s)", out.parent, exc.strerror or exc)
        folder = Path(tempfile.gettempdir()) / f"kbterm-{os.getuid()}-pages"
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
        if not os.path.isdir(folder) or os.path.islink(folder) or info.st_uid != os.getuid():
            raise
        return _save_png(image, folder / name)


def _save_png(image: Any, out: Path) -> Path:
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A name per thread as well: the TUI renders pages in two (its search and its preview).
    tmp = out.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        image.save(tmp, "PNG")
        os.replace(tmp, out)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return out
