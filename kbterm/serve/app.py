"""The HTTP API of ``kbterm serve``: vLLM's OpenAI-compatible endpoints, on Starlette.

* ``POST /v1/embeddings``: one chat (``messages``) per request, as vLLM takes it; concurrent
  requests are coalesced into batched forward passes (:mod:`kbterm.serve.batcher`);
* ``POST /v1/rerank`` (also ``/rerank``, ``/v2/rerank``): a query, documents, an instruction;
  ``POST /score`` (also ``/v1/score``): queries and documents, 1:1, 1:N or N:N;
* ``POST /v1/chat/completions``: the answer model, streamed as server-sent events (a closed
  connection stops the generation);
* ``GET /v1/models``, ``GET /health``, ``GET /version``, and kbterm's own ``GET /kbterm/v1/stats``
  and ``GET /kbterm/v1/tokenizer/embedder``.

Every request but ``/health`` needs ``Authorization: Bearer <key>``: the per-run token of the
state file, or the key of ``serve.api_key_env``.  Errors are OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status for the request's faults.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kbterm import __version__
from kbterm.backends.wire import (
    TooLarge,
    encode_embedding,
    item_from_content,
    local_chat,
    system_and_user,
)
from kbterm.serve.hosts import EmbedJob, Hosts, RerankJob, input_error

if TYPE_CHECKING:
    from kbterm.backends.base import Host

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_response(status: int, message: str, kind: str = "BadRequestError",
                   param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": status}}, status_code=status)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The JSON body, refused with 413 past ``max_bytes`` (counted as it arrives)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"the request is {int(declared)} bytes, over this server's limit "
                            f"of {max_bytes} (serve.max_request_mb)", "RequestTooLarge")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the request is over this server's limit of {max_bytes} bytes "
                                "(serve.max_request_mb)", "RequestTooLarge")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


class Api:
    """The routes over one :class:`Hosts`."""

    def __init__(self, hosts: Hosts, keys: list[str], hosts_info: dict[str, "Host"]) -> None:
        self.hosts = hosts
        self.keys = [k for k in keys if k]
        self.info = hosts_info
        self.max_bytes = int(hosts.config.serve.max_request_mb * 1024 * 1024)
        self.started = int(time.time())

    # ------------------------------------------------------------------ plumbing

    def authorised(self, request: Request) -> bool:
        if not self.keys:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return any(hmac.compare_digest(token.strip(), k) for k in self.keys)

    def name(self, role: str) -> str:
        return self.hosts.config_model(role)

    def check_model(self, body: dict[str, Any], role: str) -> str:
        name = self.name(role)
        asked = body.get("model")
        if asked not in (None, "", name):
            raise ApiError(404, f"the model {asked!r} does not exist here; this server's "
                                f"{role} is {name!r}", "NotFoundError", "model")
        return name

    def role_model(self, role: str) -> Any:
        model = getattr(self.hosts, role)
        if model is None:
            raise ApiError(404, f"this kbterm serve does not host the {role} (serve.roles)",
                           "NotFoundError")
        return model

    # ------------------------------------------------------------------ routes

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": f"kbterm {__version__}"})

    async def models(self, request: Request) -> Response:
        data = []
        for role in self.hosts.roles:
            host = self.info[role]
            data.append({
                "id": self.name(role), "object": "model", "created": self.started,
                "owned_by": "kbterm", "root": self.name(role), "parent": None,
                "max_model_len": 32768, "permission": [],
                "kbterm_role": role, "kbterm_device": host.device, "kbterm_dtype": host.dtype,
                "kbterm_why": host.why,
            })
        return JSONResponse({"object": "list", "data": data})

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.hosts.stats())

    async def tokenizer(self, request: Request) -> Response:
        model = self.role_model("embedder")
        path = model.model_folder() / "tokenizer.json"
        return Response(path.read_bytes(), media_type="application/json")

    async def embeddings(self, request: Request) -> Response:
        self.role_model("embedder")
        body = await read_json(request, self.max_bytes)
        name = self.check_model(body, "embedder")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise ApiError(400, "encoding_format must be float or base64", param="encoding_format")
        dimensions = body.get("dimensions") or 0
        if not isinstance(dimensions, int) or dimensions < 0:
            raise ApiError(400, "dimensions must be a positive integer", param="dimensions")
        if "messages" in body:
            system, user = system_and_user(body["messages"])
            jobs = [EmbedJob(self.decode_item(user, body), system or None, dimensions)]
        elif "input" in body:
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            if not texts or not all(isinstance(t, str) for t in texts):
                raise ApiError(400, "input must be a string or a list of strings", param="input")
            if len(texts) > self.hosts.max_documents:
                raise ApiError(413, f"{len(texts)} inputs is over this server's limit of "
                                    f"{self.hosts.max_documents} (serve.max_documents)",
                               "RequestTooLarge", "input")
            jobs = [EmbedJob(t, None, dimensions) for t in texts]
        else:
            raise ApiError(400, "an embedding request needs 'messages' (or 'input')")
        coalescer = self.hosts.embeddings
        assert coalescer is not None
        futures = [asyncio.wrap_future(coalescer.submit(job)) for job in jobs]
        results = await asyncio.gather(*futures)
        tokens = sum(t for _v, t in results)
        return JSONResponse({
            "id": f"embd-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
            "model": name,
            "data": [{"index": i, "object": "embedding", "embedding": encode_embedding(v, fmt)}
                     for i, (v, _t) in enumerate(results)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens,
                      "completion_tokens": 0, "prompt_tokens_details": None},
        })

    def decode_item(self, content: Any, body: dict[str, Any]) -> Any:
        fps = (body.get("mm_processor_kwargs") or {}).get("fps")
        return item_from_content(content, self.hosts.decode_image,
                                 max_frames=self.hosts.config_limits().max_frames * 4,
                                 fps=float(fps) if isinstance(fps, (int, float)) else None)

    def rerank_settings(self, body: dict[str, Any], documents: int) -> str | None:
        """Refuse too many documents; the instruction (vLLM 0.33: ``instruction``, or
        ``chat_template_kwargs.instruction``)."""
        if documents > self.hosts.max_documents:
            raise ApiError(413, f"{documents} documents is over this server's limit of "
                                f"{self.hosts.max_documents} (serve.max_documents)",
                           "RequestTooLarge", "documents")
        return body.get("instruction") or \
            (body.get("chat_template_kwargs") or {}).get("instruction")

    async def rerank(self, request: Request) -> Response:
        self.role_model("reranker")
        body = await read_json(request, self.max_bytes)
        name = self.check_model(body, "reranker")
        documents = body.get("documents")
        if "query" not in body or not isinstance(documents, list):
            raise ApiError(400, "a rerank request needs 'query' and a list of 'documents'")
        instruction = self.rerank_settings(body, len(documents))
        query = self.decode_item(body["query"], body)
        docs = [self.decode_item(d.get("text") if isinstance(d, dict) and "text" in d else d,
                                 body) for d in documents]
        if not docs:
            return JSONResponse({"id": f"rerank-{uuid.uuid4().hex}", "model": name,
                                 "usage": {"total_tokens": 0}, "results": []})
        coalescer = self.hosts.reranks
        assert coalescer is not None
        result = await asyncio.wrap_future(coalescer.submit(RerankJob(query, docs, instruction)))
        if result.errors:
            i, reason = sorted(result.errors.items())[0]
            raise ApiError(400, f"document {i} cannot be read: {reason}", param="documents")
        order = sorted(range(len(docs)), key=lambda i: -result.scores[i])
        top_n = body.get("top_n")
        if isinstance(top_n, int) and top_n > 0:
            order = order[:top_n]
        keep = body.get("return_documents", True)
        results = []
        for i in order:
            document = None
            if keep:  # vLLM echoes the document, both keys present
                raw = documents[i]
                parts = raw.get("content") if isinstance(raw, dict) else None
                document = {"text": raw if isinstance(raw, str) else None,
                            "multi_modal": parts}
            results.append({"index": i, "document": document,
                            "relevance_score": result.scores[i]})
        return JSONResponse({"id": f"score-{uuid.uuid4().hex}", "model": name,
                             "usage": {"prompt_tokens": result.tokens,
                                       "total_tokens": result.tokens},
                             "results": results})

    async def score(self, request: Request) -> Response:
        """vLLM's ``/score``: ``queries`` and ``documents`` (or ``text_1``/``text_2``,
        ``data_1``/``data_2``, ``queries``/``items``), 1:1, 1:N or N:N."""
        self.role_model("reranker")
        body = await read_json(request, self.max_bytes)
        name = self.check_model(body, "reranker")
        for left, right in (("queries", "documents"), ("queries", "items"),
                            ("text_1", "text_2"), ("data_1", "data_2")):
            if left in body and right in body:
                queries, documents = body[left], body[right]
                break
        else:
            raise ApiError(400, "a score request needs queries and documents "
                                "(or text_1 and text_2)")
        queries = queries if isinstance(queries, list) else [queries]
        documents = documents if isinstance(documents, list) else [documents]
        if len(queries) != 1 and len(queries) != len(documents):
            raise ApiError(400, "Input lengths must be either 1:1, 1:N or N:N")
        instruction = self.rerank_settings(body, len(documents))
        docs = [self.decode_item(d, body) for d in documents]
        coalescer = self.hosts.reranks
        assert coalescer is not None
        if len(queries) == 1:
            jobs = [RerankJob(self.decode_item(queries[0], body), docs, instruction)]
        else:
            jobs = [RerankJob(self.decode_item(q, body), [d], instruction)
                    for q, d in zip(queries, docs)]
        results = await asyncio.gather(*[asyncio.wrap_future(coalescer.submit(j)) for j in jobs])
        scores, tokens = [], 0
        for result in results:
            if result.errors:
                raise ApiError(400, f"a document cannot be read: "
                                    f"{sorted(result.errors.items())[0][1]}", param="documents")
            scores.extend(result.scores)
            tokens += result.tokens
        return JSONResponse({
            "id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
            "model": name,
            "data": [{"index": i, "object": "score", "score": v} for i, v in enumerate(scores)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        })

    async def chat(self, request: Request) -> Response:
        model = self.role_model("generator")
        body = await read_json(request, self.max_bytes)
        name = self.check_model(body, "generator")
        messages = local_chat(body.get("messages"), self.hosts.decode_image,
                              self.hosts.config_limits())
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ApiError(400, "max_tokens must be a positive integer", param="max_tokens")
        temperature = body.get("temperature")
        if temperature is not None and (not isinstance(temperature, (int, float))
                                        or temperature < 0):
            raise ApiError(400, "temperature must be a number >= 0", param="temperature")
        limit = max_tokens or model.max_new_tokens
        stream = await asyncio.to_thread(
            model.stream_messages, messages, max_new_tokens=limit,
            temperature=None if temperature is None else float(temperature))
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.hosts.generations += 1
        if not body.get("stream"):
            try:
                text = "".join(await asyncio.to_thread(list, stream))
            finally:
                stream.close()
            made = model.last_generated_tokens
            return JSONResponse({
                "id": ident, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": _finish(made, limit)}],
                "usage": {"prompt_tokens": 0, "completion_tokens": made,
                          "total_tokens": made},
            })
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._sse(request, stream, model, ident, created, name, limit, usage),
            media_type="text/event-stream")

    async def _sse(self, request: Request, stream: Any, model: Any, ident: str, created: int,
                   name: str, limit: int, usage: bool) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return "data: " + json.dumps({
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": name, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish}]}) + "\n\n"

        async def watch() -> None:
            # The body is read: what comes next is the disconnect.  Waiting for it here, not
            # for a failed write, stops the generation even while no text is being sent (the
            # streamer holds back pieces until a word ends).
            while (await request.receive())["type"] != "http.disconnect":
                pass
            stream.cancel()

        watcher = asyncio.ensure_future(watch())
        pending: asyncio.Future | None = None
        self.hosts.streams_open += 1
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                pending = asyncio.ensure_future(asyncio.to_thread(next, stream, None))
                piece = await pending
                if piece is None:
                    break
                yield chunk({"content": piece})
            made = model.last_generated_tokens
            yield chunk({}, _finish(made, limit))
            if usage:
                yield "data: " + json.dumps({
                    "id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": name, "choices": [],
                    "usage": {"prompt_tokens": 0, "completion_tokens": made,
                              "total_tokens": made}}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            # The client went away or the answer ended: either way the generation thread
            # stops after its current token.  A piece still being waited for is not awaited
            # here (a cancelled task cannot wait): the stream is closed, and counted as
            # closed, when that piece comes.
            watcher.cancel()
            stream.cancel()

            def finish(done: Any = None) -> None:
                if done is not None and not done.cancelled():
                    done.exception()  # retrieved: the stream is over either way
                try:
                    stream.close()
                finally:
                    self.hosts.streams_open -= 1

            if pending is not None and not pending.done():
                pending.add_done_callback(finish)
            else:
                finish()


def _finish(made: int, limit: int) -> str:
    return "length" if made >= limit else "stop"


def make_app(hosts: Hosts, keys: list[str], info: dict[str, "Host"]) -> Starlette:
    api = Api(hosts, keys, info)
    open_paths = {"/health"}

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if request.url.path not in open_paths and not api.authorised(request):
                return error_response(401, "missing or wrong API key (Authorization: Bearer)",
                                      "AuthenticationError")
            try:
                return await handler(request)
            except ApiError as exc:
                return error_response(exc.status, exc.message, exc.kind, exc.param)
            except TooLarge as exc:
                return error_response(413, str(exc), "RequestTooLarge")
            except Exception as exc:  # noqa: BLE001 - one line to the client, details logged
                if input_error(exc):
                    return error_response(400, str(exc))
                log.exception("request %s failed", request.url.path)
                return error_response(500, f"{type(exc).__name__}: {exc}",
                                      "InternalServerError")
        return endpoint

    routes = [
        Route("/health", guarded(api.health), methods=["GET"]),
        Route("/version", guarded(api.version), methods=["GET"]),
        Route("/v1/models", guarded(api.models), methods=["GET"]),
        Route("/v1/embeddings", guarded(api.embeddings), methods=["POST"]),
        Route("/v1/chat/completions", guarded(api.chat), methods=["POST"]),
        Route("/kbterm/v1/stats", guarded(api.stats), methods=["GET"]),
        Route("/kbterm/v1/tokenizer/embedder", guarded(api.tokenizer), methods=["GET"]),
    ] + [Route(path, guarded(api.rerank), methods=["POST"])
         for path in ("/v1/rerank", "/rerank", "/v2/rerank")
         ] + [Route(path, guarded(api.score), methods=["POST"]) for path in ("/score", "/v1/score")]
    return Starlette(routes=routes)
