"""``kbterm mcp``: the knowledge base as tools for AI agents (the Model Context Protocol).

Built on the official ``mcp`` SDK (2.x, ``mcp.server.mcpserver.MCPServer``).  Four tools:

* ``search`` - ranked hits with their citation (file, page, lines, time range), scores, snippet
  and chunk id; structured output with a schema, and a short text rendering;
* ``get`` - a chunk (by id, or by path with a page, line or time): a text chunk's source lines
  with context, or a PDF page, photo or video keyframe as an image (at most
  :data:`MAX_IMAGE_SIDE` pixels a side, JPEG);
* ``ask`` - an answer with numbered sources (when an answer model is available);
* ``status`` - files, chunks, failures, pictures pending, the watcher.

Imported only by ``kbterm mcp`` (it loads the SDK).  Read-only: the searcher writes nothing to the data folder (``Searcher(read_only=True)``), no
writer lock is taken, and a running watcher may write meanwhile.  The models are where the rest
of kbterm finds them (a running ``kbterm serve`` makes the first call fast).  Nothing but the
protocol goes to stdout (the server owns it); logs go to stderr.  Bad arguments are tool errors
(``is_error``), never a dead server.
"""

import base64
import io
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from kbterm.errors import KbtermError
from kbterm.textsafe import visible

if TYPE_CHECKING:
    from kbterm.config import Config

log = logging.getLogger(__name__)

MAX_K = 50
MAX_IMAGE_SIDE = 1568  # what vision-capable agents take in whole
CONTEXT_LINES = 8
FILE_TYPES = ("text", "markdown", "html", "json", "pdf", "image", "video")


class HitOut(BaseModel):
    rank: int
    id: str = Field(description="chunk id: give it to get() for the source")
    path: str
    citation: str = Field(description="file and page, lines or time range")
    file_type: str
    modality: str = Field(description="text, image (a photo or a PDF page) or video")
    page: int | None = None
    line_start: int | None = None
    line_end: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    snippet: str
    rerank_score: float | None = Field(None, description="Qwen3-VL-Reranker, 0-1")
    embedding_score: float | None = Field(None, description="cosine with the query")
    keyword_score: float | None = Field(None, description="BM25")


class SearchOut(BaseModel):
    query: str
    hits: list[HitOut]
    reranked: bool
    warnings: list[str] = []


class SourceOut(BaseModel):
    number: int
    citation: str
    path: str
    id: str


class AskOut(BaseModel):
    question: str
    answer: str
    sources: list[SourceOut]


class StatusOut(BaseModel):
    data_dir: str
    files: int
    chunks: int
    files_by_type: dict[str, dict[str, int]]
    chunks_by_modality: dict[str, int]
    failures: int
    pictures_pending: int
    embedding_model: str
    watcher: str


class Tools:
    """The tools' work, on one searcher (models and the vector cache stay loaded); calls are
    serialised (the SDK may run tools concurrently; the models are not re-entrant)."""

    def __init__(self, config: "Config") -> None:
        from kbterm.retrieval import Searcher

        self.config = config
        self.searcher = Searcher(config, read_only=True)
        self._lock = threading.Lock()
        self._asker: Any = None

    # ------------------------------------------------------------------ search

    def search(self, query: str, image: str | None, k: int, types: list[str] | None,
               paths: list[str] | None, after: str | None, before: str | None,
               rerank: bool) -> SearchOut:
        from kbterm.retrieval import Filters, parse_when

        if not (query or "").strip() and not image:
            raise ToolInputError("give a query, an image, or both")
        if not 1 <= k <= MAX_K:
            raise ToolInputError(f"k must be between 1 and {MAX_K}, not {k}")
        bad = [t for t in types or [] if t not in FILE_TYPES]
        if bad:
            raise ToolInputError(f"unknown type {bad[0]!r}: use {', '.join(FILE_TYPES)}")
        medium = _medium(image)
        filters = Filters(paths=tuple(paths or ()), types=tuple(types or ()),
                          modified_after=parse_when(after, "after") if after else None,
                          modified_before=parse_when(before, "before") if before else None)
        with self._lock:
            results = self.searcher.search(query or "", medium, k=k, rerank=rerank,
                                           filters=filters)
        hits = [HitOut(rank=h.rank, id=h.id, path=h.path, citation=h.citation(),
                       file_type=h.file_type, modality=h.modality, page=h.page,
                       line_start=h.line_start, line_end=h.line_end, start_s=h.start_s,
                       end_s=h.end_s, snippet=visible(h.snippet, keep_newlines=False),
                       rerank_score=h.rerank_score, embedding_score=h.embedding_score,
                       keyword_score=h.keyword_score) for h in results.hits]
        return SearchOut(query=query or "", hits=hits,
                         reranked=any(h.rerank_score is not None for h in results.hits),
                         warnings=[visible(w) for w in results.warnings])

    # ------------------------------------------------------------------ get

    def get(self, id: str | None, path: str | None, page: int | None, line: int | None,
            time: float | None) -> tuple[str, list[Any]]:
        """(a citation, content parts: text and/or ("image", jpeg bytes))."""
        hit = self._find(id, path, page, line, time)
        if hit.modality == "text":
            return self._text(hit)
        picture = self._picture(hit)
        if picture is None:
            raise ToolInputError(f"{hit.citation()}: the picture cannot be read any more")
        return hit.citation(), [visible(f"{hit.citation()} ({hit.path})"), picture]

    def _find(self, id: str | None, path: str | None, page: int | None, line: int | None,
              time: float | None) -> Any:
        with self._lock:
            rows = self.searcher.chunk_rows()
        if id:
            match = [r for r in rows if r["id"] == id]
            if not match:
                raise ToolInputError(f"no chunk {id!r} in the index (ids come from search)")
            return self._hit(match[0])
        if not path:
            raise ToolInputError("give an id (from search), or a path with a page, line or time")
        real = os.path.realpath(os.path.expanduser(path))
        rows = [r for r in rows if r["path"] in (path, real)]
        if not rows:
            raise ToolInputError(f"{path} is not in the index")
        if page is not None:
            pick = [r for r in rows if r["page"] == page]
            pick = [r for r in pick if r["modality"] != "text"] or pick
        elif time is not None:
            pick = [r for r in rows if r["start_s"] is not None
                    and r["start_s"] <= time <= (r["end_s"] or r["start_s"])]
        elif line is not None:
            pick = [r for r in rows if r["line_start"] is not None
                    and r["line_start"] <= line <= (r["line_end"] or r["line_start"])]
        else:
            pick = sorted(rows, key=lambda r: (r["page"] or 0, r["line_start"] or 0,
                                               r["start_s"] or 0))[:1]
        if not pick:
            where = (f"page {page}" if page is not None else f"{time:g} s" if time is not None
                     else f"line {line}")
            raise ToolInputError(f"{path} has no chunk at {where}")
        return self._hit(pick[0])

    def _hit(self, row: dict[str, Any]) -> Any:
        hit = self.searcher.hit(row["id"])
        if hit is None:  # replaced between the two reads (a watcher writing)
            raise ToolInputError(f"chunk {row['id']!r} is gone from the index: search again")
        return hit

    def _text(self, hit: Any) -> tuple[str, list[Any]]:
        context = self.searcher.context(hit, CONTEXT_LINES)
        if context is None:
            body = hit.content
            header = f"{hit.citation()} ({hit.path})"
        else:
            numbered = [f"{n:>6}  {line}" for n, line in
                        enumerate(context.lines, start=context.first_line)]
            body = "\n".join(numbered)
            header = (f"{hit.citation()} ({hit.path}); lines {context.first_line}-"
                      f"{context.first_line + len(context.lines) - 1} with the hit's "
                      f"{context.hit_start}-{context.hit_end}")
        return hit.citation(), [visible(f"{header}\n\n{body}")]

    def _picture(self, hit: Any) -> tuple[str, bytes] | None:
        """("image", JPEG bytes) of the hit's page, photo or keyframe, bounded in size (the
        searcher draws a page, in a temporary folder, at the model's size)."""
        from kbterm.ingest.image import load_preview

        if not hit.image_path:
            return None
        try:
            image = load_preview(hit.image_path, MAX_IMAGE_SIDE ** 2)
        except Exception as exc:  # noqa: BLE001 - gone, swapped, damaged: said as such
            log.info("cannot read the picture of %s: %s", hit.citation(), exc)
            return None
        image = image.convert("RGB")
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return ("image", out.getvalue())

    # ------------------------------------------------------------------ ask, status

    def ask(self, question: str, types: list[str] | None, paths: list[str] | None) -> AskOut:
        from kbterm.answer import Asker, GeneratorMissing, NoEvidence
        from kbterm.retrieval import Filters

        if not question.strip():
            raise ToolInputError("the question is empty")
        with self._lock:
            if self._asker is None:
                self._asker = Asker(self.config, searcher=self.searcher)
            try:
                answer = self._asker.prepare(question, None, Filters(
                    paths=tuple(paths or ()), types=tuple(types or ())))
            except NoEvidence as exc:
                raise ToolInputError(f"the knowledge base has no answer to this: {exc}")
            try:
                text = "".join(self._asker.stream(answer))
            except GeneratorMissing as exc:
                raise ToolInputError(f"no answer model is available: {exc}; search and get "
                                     "still work") from None
        sources = [SourceOut(number=n, citation=h.citation(), path=h.path, id=h.id)
                   for n, h in answer.sources()]
        return AskOut(question=question, answer=visible(text.strip()), sources=sources)

    def status(self) -> StatusOut:
        from kbterm.status import collect, watcher_lines

        report = collect(self.config)
        return StatusOut(
            data_dir=report.data_dir, files=report.files, chunks=report.chunks,
            files_by_type=report.files_by_type, chunks_by_modality=report.chunks_by_modality,
            failures=len(report.failures), pictures_pending=report.pictures_pending,
            embedding_model=report.embedding_model,
            watcher=watcher_lines(report.watcher)[0].split(None, 1)[1])


class ToolInputError(KbtermError):
    """A bad argument: the tool call fails with this message, the server goes on."""


def _medium(image: str | None) -> Any:
    if not image:
        return None
    path = Path(os.path.expanduser(image))
    if not path.is_file():
        raise ToolInputError(f"{image}: no such file")
    from kbterm.filetypes import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        from kbterm.models.inputs import Video

        return Video(str(path))
    if suffix not in IMAGE_SUFFIXES:
        raise ToolInputError(f"{image}: not an image or video file")
    return str(path)


def render_search(out: SearchOut) -> str:
    if not out.hits:
        return f"no results for {out.query!r}"
    lines = []
    for h in out.hits:
        score = f"rerank {h.rerank_score:.2f}" if h.rerank_score is not None else \
            f"cosine {h.embedding_score:.2f}" if h.embedding_score is not None else "keyword"
        lines.append(f"{h.rank}. {visible(h.citation, keep_newlines=False)} [{score}] "
                     f"id={h.id}\n   {h.snippet}")
    return "\n".join(lines)


def build_server(config: "Config") -> Any:
    """The MCP server with kbterm's tools."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from kbterm import __version__

    tools = Tools(config)
    server = MCPServer(
        "kbterm", version=__version__,
        instructions=("kbterm searches the user's own files (notes, PDFs with every page also "
                      "as an image, photos, videos) in one vector space. search() gives "
                      "ranked hits with page-exact citations and ids; get(id) gives the source "
                      "text or the page, photo or video frame as an image; ask() answers with "
                      "numbered sources."),
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    def fail(exc: Exception) -> ToolError:
        return ToolError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    @server.tool(annotations=read_only)
    def search(query: str = "", image: str | None = None, k: int = 10,
               type: list[str] | None = None, path: list[str] | None = None,  # noqa: A002
               after: str | None = None, before: str | None = None,
               rerank: bool = True) -> Annotated[CallToolResult, SearchOut]:
        """Search the knowledge base by text and/or an image or video file (its path).

        type: file types to keep (text, markdown, html, json, pdf, image, video); path: folders
        or globs to keep; after/before: a date (2026-11-01) or an age (7d); rerank: score the
        hits with the reranker (slower, better order)."""
        try:
            out = tools.search(query, image, k, type, path, after, before, rerank)
        except KbtermError as exc:
            raise fail(exc) from None
        return CallToolResult(content=[TextContent(text=render_search(out))],
                              structured_content=out.model_dump(mode="json"))

    @server.tool(annotations=read_only)
    def get(id: str | None = None, path: str | None = None, page: int | None = None,  # noqa: A002
            line: int | None = None, time: float | None = None) -> CallToolResult:
        """The source of a hit: give its id (from search), or a file's path with a page (PDF),
        a line (text) or a time in seconds (video).  A text chunk comes with the lines around
        it; a PDF page, a photo or a video frame comes as an image."""
        try:
            _citation, parts = tools.get(id, path, page, line, time)
        except KbtermError as exc:
            raise fail(exc) from None
        content: list[Any] = []
        for part in parts:
            if isinstance(part, tuple):
                content.append(ImageContent(data=base64.b64encode(part[1]).decode("ascii"),
                                            mime_type="image/jpeg"))
            else:
                content.append(TextContent(text=part))
        return CallToolResult(content=content)

    @server.tool(annotations=read_only)
    def ask(question: str, type: list[str] | None = None,  # noqa: A002
            path: list[str] | None = None) -> Annotated[CallToolResult, AskOut]:
        """Answer a question from the knowledge base, citing numbered sources (needs an answer
        model: Qwen3-VL-Instruct, in this process, a kbterm serve or a server)."""
        try:
            out = tools.ask(question, type, path)
        except KbtermError as exc:
            raise fail(exc) from None
        text = out.answer + "\n\nSources:\n" + "\n".join(
            f"[{s.number}] {s.citation} (id={s.id})" for s in out.sources)
        return CallToolResult(content=[TextContent(text=text)],
                              structured_content=out.model_dump(mode="json"))

    @server.tool(annotations=read_only)
    def status() -> StatusOut:
        """Files and chunks in the index, failures, pictures still to embed, the watcher."""
        try:
            return tools.status()
        except KbtermError as exc:
            raise fail(exc) from None

    return server
