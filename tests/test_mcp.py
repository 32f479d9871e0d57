"""``kbterm mcp`` (issue #17): a real MCP client session (the official SDK's stdio and
Streamable HTTP clients) against a ``kbterm mcp`` subprocess on the tiny checkpoint, whose
models run in the session's shared ``kbterm serve``."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env, write_config_file
from corpus_builder import book_excerpt
from indexing_helpers import make_config, run_index
from test_index_media import unique_line


@pytest.fixture(scope="module")
def kb(tmp_path_factory, corpus, index_model_dir, index_embedder, index_serve):
    """An index of notes, a 3-page PDF and a photo; a config whose models are served."""
    base = tmp_path_factory.mktemp("mcp")
    folder = base / "library"
    folder.mkdir()
    (folder / "lighthouse.md").write_text("# Log\n\nline one\nThe keeper logs the tide.\n"
                                          "The fog horn sounded at dawn over the harbour.\n"
                                          "line four\n")
    book_excerpt(corpus, folder / "book.pdf", 3)
    shutil.copy(corpus / "images" / "photo_1.jpg", folder)
    data = base / "data"
    run_index(make_config(index_model_dir, data, [folder]), embedder=index_embedder)
    config = write_config_file(base / "c.toml", index_model_dir,
                               "[ask]\nmin_rerank_score = 0.0\n", data_dir=data,
                               generator="max_new_tokens = 16\n", served=index_serve)
    return config, folder, data


def snapshot(data: Path) -> dict[str, tuple[int, int]]:
    """Every file of the data folder with its size and mtime."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in data.rglob("*") if p.is_file()}


async def stdio_session(config: Path, work):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = subprocess_env()
    env.pop("KBTERM_DATA_DIR", None)
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "kbterm", "--config", str(config), "mcp"],
                                   env=env, cwd=str(REPO))
    with open(os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)


async def exercise(s, phrase: str, book: Path) -> dict:
    """Every tool, and bad arguments, through one session (either transport)."""
    out = {"tools": {t.name: t for t in (await s.list_tools()).tools}}
    out["search"] = await s.call_tool("search", {"query": phrase, "k": 5, "rerank": False,
                                                 "type": ["pdf"]})
    out["reranked"] = await s.call_tool("search", {"query": "fog horn harbour", "k": 10})
    hits = out["reranked"].structured_content["hits"]
    note = next(h for h in hits if h["path"].endswith("lighthouse.md"))
    out["text"] = await s.call_tool("get", {"id": note["id"]})
    out["page"] = await s.call_tool("get", {"path": str(book), "page": 2})
    out["bad"] = [await s.call_tool(name, args) for name, args in (
        ("search", {}), ("search", {"query": "x", "k": 0}),
        ("search", {"query": "x", "type": ["spreadsheet"]}),
        ("get", {}), ("get", {"id": "no-such-chunk"}),
        ("get", {"path": str(book), "page": 99}))]
    out["status"] = await s.call_tool("status", {})  # still alive after the errors
    out["ask"] = await s.call_tool("ask", {"question": "When did the fog horn sound?"})
    return out


def check(out: dict, book: Path) -> None:
    tools = out["tools"]
    assert set(tools) == {"search", "get", "ask", "status"}
    schema = tools["search"].input_schema["properties"]
    assert {"query", "image", "k", "type", "path", "after", "before", "rerank"} <= set(schema)
    assert "hits" in tools["search"].output_schema["properties"]
    assert tools["search"].annotations.read_only_hint

    found = out["search"]
    assert not found.is_error
    top = found.structured_content["hits"][0]
    assert top["path"] == str(book) and top["page"] == 2 and top["citation"] == "book.pdf, page 2"
    assert "book.pdf, page 2" in found.content[0].text and top["id"] in found.content[0].text
    assert out["reranked"].structured_content["reranked"]

    text = out["text"].content[0].text
    assert "lighthouse.md, lines" in text and "The fog horn sounded at dawn" in text
    assert "     1  # Log" in text  # the lines around the hit, numbered

    page = out["page"]
    assert not page.is_error and [c.type for c in page.content] == ["text", "image"]
    assert page.content[0].text.startswith("book.pdf, page 2")
    from PIL import Image

    picture = Image.open(io.BytesIO(base64.b64decode(page.content[1].data)))
    assert picture.format == "JPEG" and max(picture.size) <= 1568 and page.content[1].mime_type \
        == "image/jpeg"

    messages = [r.content[0].text for r in out["bad"]]
    assert all(r.is_error for r in out["bad"]), messages
    assert "give a query, an image, or both" in messages[0]
    assert "k must be between 1 and 50" in messages[1]
    assert "unknown type 'spreadsheet'" in messages[2]
    assert "give an id" in messages[3] and "no chunk 'no-such-chunk'" in messages[4]
    assert "has no chunk at page 99" in messages[5]
    status = out["status"].structured_content
    assert status["files"] == 3 and status["chunks"] > 3 and status["failures"] == 0
    answer = out["ask"]  # the tiny served generator writes random words, with the sources
    assert not answer.is_error, answer.content[0].text
    sources = answer.structured_content["sources"]
    assert sources and all(src["id"] and src["citation"] for src in sources)
    assert "Sources:\n[1] " in answer.content[0].text


def test_stdio_tools_search_get_ask_status_and_bad_arguments(kb):
    config, folder, data = kb
    book = folder / "book.pdf"
    before = snapshot(data)
    out = asyncio.run(stdio_session(config, lambda s: exercise(s, unique_line(book, 2), book)))
    check(out, book)
    assert snapshot(data) == before  # nothing written to the data folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streamable_http_with_a_key_and_origin_checks(kb, tmp_path):
    import httpx2

    config, folder, data = kb
    port = free_port()
    env = subprocess_env(KBTERM_MCP_KEY="s3cret-key")
    env.pop("KBTERM_DATA_DIR", None)
    http_config = tmp_path / "http.toml"
    http_config.write_text(config.read_text() + '\n[mcp]\napi_key_env = "KBTERM_MCP_KEY"\n'
                           'allowed_origins = ["http://localhost:6274"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "kbterm", "--config", str(http_config), "mcp",
                             "--http", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        accept = {"Accept": "application/json, text/event-stream"}
        assert httpx2.post(url, json=body, headers=accept).status_code == 401  # no key
        wrong = dict(accept, Authorization="Bearer nope")
        assert httpx2.post(url, json=body, headers=wrong).status_code == 401
        key = dict(accept, Authorization="Bearer s3cret-key")
        evil = httpx2.post(url, json=body, headers=dict(key, Origin="http://evil.example"))
        assert evil.status_code == 403
        rebound = httpx2.post(url, json=body, headers=dict(key, Host="evil.example"))
        assert rebound.status_code in (400, 421)

        book = folder / "book.pdf"
        before = snapshot(data)

        async def session():
            from mcp import ClientSession
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            client = create_mcp_http_client(headers={"Authorization": "Bearer s3cret-key"})
            async with client, streamable_http_client(url, http_client=client) as (r, w):
                async with ClientSession(r, w) as s:
                    await s.initialize()
                    return await exercise(s, unique_line(book, 2), book)

        check(asyncio.run(session()), book)  # the same session as over stdio
        assert snapshot(data) == before
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_http_past_loopback_needs_a_key(kb):
    config, _folder, _data = kb
    env = subprocess_env()
    env.pop("KBTERM_DATA_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "kbterm", "--config", str(config), "mcp",
                           "--http", "--host", "0.0.0.0"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "would be reachable from other machines" in proc.stderr
    assert "Traceback" not in proc.stderr
