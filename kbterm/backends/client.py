"""The ``server`` backend: the three roles as clients of an OpenAI-compatible model server.

The server is vLLM (``vllm serve …``, the engine the model cards name) or a ``kbterm serve``;
the requests are the ones vLLM documents (:mod:`kbterm.backends.wire`).  Embeddings go one item
per request (vLLM's chat embedding request holds one conversation), several requests in flight
so that the server batches them; reranking is one request per query; answers stream over
server-sent events and stop when the stream is closed.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from kbterm.backends.base import Evidence, GenerationStream, Host, Progress
from kbterm.backends.http import Connection, Endpoint
from kbterm.errors import BackendProtocolError, Cancelled, InputError

if TYPE_CHECKING:
    from kbterm.backends.base import TextTokenizer
    from kbterm.models.encoding import VisionLimits
    from kbterm.models.inputs import Item

# Documents per rerank request: a cancel (a newer keystroke) takes effect between requests.
RERANK_REQUEST_DOCUMENTS = 32


class ServerRole:
    """What the three server roles share: the connection, the model name, the host line."""

    role = ""

    def __init__(self, endpoint: Endpoint, *, model: str, served_name: str = "",
                 kind: str = "server", limits: "VisionLimits | None" = None) -> None:
        from kbterm.models.encoding import VisionLimits

        self.endpoint = endpoint
        self.model = model  # the checkpoint the config names (for the tokenizer, messages)
        self._served_name = served_name
        self.kind = kind  # "server" or "kbterm serve"
        self.limits = limits or VisionLimits()
        self.connection = Connection(endpoint, self.role)
        self._info: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return False  # no weights in this process

    @property
    def calls(self) -> int:
        return self.connection.requests

    def release(self) -> bool:
        return False

    def served_name(self) -> str:
        """The model name the server knows (configured, or the first of ``/v1/models``)."""
        if not self._served_name:
            self._probe()
        return self._served_name

    def _probe(self) -> dict[str, Any]:
        with self._lock:
            if self._info is None:
                listing = self.connection.get("/v1/models")
                models = listing.get("data") if isinstance(listing, dict) else None
                if not models:
                    raise BackendProtocolError(
                        f"the {self.role} server at {self.endpoint.display} lists no models "
                        "at /v1/models")
                ids = [m.get("id") for m in models if isinstance(m, dict)]
                if not self._served_name:
                    mine = [m for m in models if m.get("kbterm_role") == self.role]
                    self._served_name = (mine[0] if mine else models[0]).get("id", "")
                elif self._served_name not in ids:
                    raise BackendProtocolError(
                        f"the {self.role} server at {self.endpoint.display} serves "
                        f"{', '.join(map(str, ids))}, not {self._served_name} "
                        f"(models.{self.role}.served_name)")
                entry = next(m for m in models if m.get("id") == self._served_name)
                self._info = dict(entry)
                if entry.get("owned_by") == "kbterm":
                    self.kind = "kbterm serve"
        return self._info

    def warm(self) -> None:
        self._probe()

    def host(self) -> Host:
        info = self._probe()
        return Host(self.kind, self._served_name, str(info.get("kbterm_device", "")),
                    str(info.get("kbterm_dtype", "")), url=self.endpoint.display,
                    why=str(info.get("kbterm_why", "")))


class ServerEmbedder(ServerRole):
    role = "embedder"

    def __init__(self, endpoint: Endpoint, *, model: str, dimension: int = 0,
                 instruction: str, in_flight: int = 8, tokenizer_source: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(endpoint, model=model, **kwargs)
        self.requested_dimension = dimension
        self.default_instruction = instruction
        self.in_flight = max(1, in_flight)
        self._dimension = 0
        self._tokenizer_source = tokenizer_source  # callable giving a tokenizer, or None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def dimension(self) -> int:
        if not self._dimension:
            self._dimension = int(self.embed(["kbterm"]).shape[1])
        return self._dimension

    def tokenizer(self) -> "TextTokenizer":
        if self._tokenizer_source is not None:
            return self._tokenizer_source(self)
        from kbterm.backends.tokenizer import hub_tokenizer

        return hub_tokenizer(self.model)

    def tokenizer_file(self) -> bytes:
        """A kbterm serve hands out the tokenizer file of the checkpoint it runs."""
        return self.connection.get_bytes("/kbterm/v1/tokenizer/embedder")

    def _one(self, item: "Item", instruction: str) -> np.ndarray:
        from kbterm.backends.wire import decode_embedding, embedding_request

        name = self.served_name()
        body = embedding_request(name, item, instruction, self.limits, self.requested_dimension,
                                 frame_rate=self.kind == "kbterm serve")
        data = self.connection.post("/v1/embeddings", body)
        try:
            vector = decode_embedding(data["data"][0]["embedding"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendProtocolError(
                f"the embedder server at {self.endpoint.display} answered /v1/embeddings "
                f"without an embedding ({exc})") from None
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def embed(self, items: Sequence["Item"], instruction: str | None = None, *,
              progress: Progress | None = None) -> np.ndarray:
        instruction = instruction or self.default_instruction
        if not items:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="kbterm-embed")
        futures = [self._pool.submit(self._one, item, instruction) for item in items]
        rows = []
        try:
            for done, future in enumerate(futures, start=1):
                rows.append(future.result())
                if progress is not None:
                    progress(done, len(items))
        finally:
            for future in futures:
                future.cancel()
        out = np.stack(rows).astype(np.float32)
        if not self._dimension:
            self._dimension = out.shape[1]
        elif out.shape[1] != self._dimension:
            raise BackendProtocolError(
                f"the embedder server at {self.endpoint.display} changed its vector size "
                f"from {self._dimension} to {out.shape[1]}")
        return out


class ServerReranker(ServerRole):
    role = "reranker"

    def __init__(self, endpoint: Endpoint, *, model: str, instruction: str,
                 **kwargs: Any) -> None:
        super().__init__(endpoint, model=model, **kwargs)
        self.default_instruction = instruction
        self._use_score = False

    def score(self, query: "Item", documents: Sequence["Item"], instruction: str | None = None,
              *, cancel: threading.Event | None = None,
              unreadable: dict[int, str] | None = None) -> list[float]:
        from kbterm.backends.wire import rerank_body, rerank_document

        instruction = instruction or self.default_instruction
        scores: list[float | None] = [None] * len(documents)
        wired: list[tuple[int, Any]] = []
        for i, doc in enumerate(documents):
            try:
                wired.append((i, rerank_document(doc, self.limits)))
            except InputError as exc:
                if unreadable is None:
                    raise
                unreadable[i] = str(exc)
        if not wired:
            return scores  # type: ignore[return-value]
        wired_query = rerank_document(query, self.limits)
        for start in range(0, len(wired), RERANK_REQUEST_DOCUMENTS):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            chunk = wired[start:start + RERANK_REQUEST_DOCUMENTS]
            body = rerank_body(self.served_name(), wired_query, [d for _i, d in chunk],
                               instruction)
            for index, value in self._post(body, len(chunk)):
                scores[chunk[index][0]] = value
        return scores  # type: ignore[return-value]


    def _post(self, body: dict[str, Any], n: int) -> Iterator[tuple[int, float]]:
        """``/v1/rerank``, or ``/score`` on a server without it (then remembered)."""
        if not self._use_score:
            try:
                return _rerank_results(self.connection.post("/v1/rerank", body), n,
                                       self.endpoint.display)
            except BackendProtocolError as exc:
                if "has no /v1/rerank" not in str(exc):
                    raise
                self._use_score = True
        score = {k: v for k, v in body.items() if k not in ("query", "documents")}
        score.update(queries=body["query"], documents=body["documents"])
        return _score_results(self.connection.post("/score", score), n, self.endpoint.display)


def _score_results(data: Any, n: int, where: str) -> Iterator[tuple[int, float]]:
    try:
        got = {int(r["index"]): float(r["score"]) for r in data["data"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendProtocolError(
            f"the reranker server at {where} answered /score without scores ({exc})") from None
    if sorted(got) != list(range(n)):
        raise BackendProtocolError(f"the reranker server at {where} scored {len(got)} of {n}")
    return iter(sorted(got.items()))


def _rerank_results(data: Any, n: int, where: str) -> Iterator[tuple[int, float]]:
    try:
        results = data["results"]
        got = {int(r["index"]): float(r["relevance_score"]) for r in results}
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendProtocolError(
            f"the reranker server at {where} answered /v1/rerank without results ({exc})"
        ) from None
    if sorted(got) != list(range(n)):
        raise BackendProtocolError(
            f"the reranker server at {where} scored {len(got)} of {n} documents")
    return iter(sorted(got.items()))


class ServerGenerator(ServerRole):
    role = "generator"

    def __init__(self, endpoint: Endpoint, *, model: str, max_new_tokens: int,
                 temperature: float, **kwargs: Any) -> None:
        super().__init__(endpoint, model=model, **kwargs)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def stream(self, question: str, evidence: Sequence[Evidence], *,
               max_new_tokens: int | None = None,
               cancel: threading.Event | None = None) -> GenerationStream:
        from kbterm.backends.wire import chat_request
        from kbterm.models.generator import answer_messages

        cancel = cancel or threading.Event()
        body = chat_request(self.served_name(), answer_messages(question, evidence, self.limits),
                            max_tokens=max_new_tokens or self.max_new_tokens,
                            temperature=self.temperature)
        return GenerationStream(self._pieces(body, cancel), cancel)

    def _pieces(self, body: dict[str, Any], cancel: threading.Event) -> Iterator[str]:
        with self.connection.stream("/v1/chat/completions", body) as response:
            for line in response.iter_lines():
                if cancel.is_set():
                    return  # leaving the block closes the connection: the server stops
                piece = sse_piece(line, self.endpoint.display)
                if piece is None:
                    return
                if piece:
                    yield piece


def sse_piece(line: str, where: str = "") -> str | None:
    """The text of one server-sent-events line of a streamed chat completion: "" for lines
    without text, None at ``data: [DONE]``."""
    if not line.startswith("data:"):
        return ""  # blank separators, comments, event names
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        raise BackendProtocolError(f"the generator server at {where} sent a stream line "
                                   "that is not JSON") from None
    if isinstance(chunk, dict) and "error" in chunk:
        from kbterm.backends.http import error_message

        raise BackendProtocolError(f"the generator server at {where} failed mid-answer: "
                                   f"{error_message(data.encode())}")
    choices = chunk.get("choices") or []
    if not choices:
        return ""  # a usage chunk
    delta = choices[0].get("delta") or {}
    return delta.get("content") or ""
