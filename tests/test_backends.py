"""The backend seam without a server: choosing a backend, the tokenizer without weights, the
wire format both ways (vLLM's documented shapes), stream and error parsing, coalescing."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from kbterm.backends import choose
from kbterm.backends.client import sse_piece
from kbterm.backends.http import error_message
from kbterm.backends.wire import (
    embedding_request,
    item_from_content,
    local_chat,
    rerank_request,
    system_and_user,
)
from kbterm.config import config_from_dict
from kbterm.errors import BackendProtocolError, ConfigError
from kbterm.models.encoding import VisionLimits
from kbterm.models.inputs import Image, Video
from kbterm.serve.batcher import Coalescer
from kbterm.serve.state import ServeState, write_state

TEXTS = ["Plain English, with punctuation.", "中文笔记：会议在星期四。", "日本語のメモ、カタカナ",
         "한국어 메모입니다", "tabs\tand\nnewlines  and   spaces", "emoji 🙂 and ünïcödé"]


def picture(seed: int, size: tuple[int, int] = (96, 64)) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    return PILImage.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"), "RGB")


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_file_alone_equals_the_checkpoints_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    from kbterm.backends.tokenizer import folder_tokenizer

    reference = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    mine = folder_tokenizer(tiny_model_dir)
    for text in TEXTS:
        want = reference(text, add_special_tokens=False, return_offsets_mapping=True)
        got = mine(text, add_special_tokens=False, return_offsets_mapping=True)
        assert got["input_ids"] == list(want["input_ids"])
        assert [tuple(o) for o in got["offset_mapping"]] == \
            [tuple(o) for o in want["offset_mapping"]]


def test_the_chunker_gets_its_tokenizer_without_loading_weights(tiny_model_dir):
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder

    model = Embedder(ModelSpec("embedder", str(tiny_model_dir), device="cpu", dtype="float32"))
    tok = model.tokenizer()
    assert not model.loaded
    assert tok("hello world")["input_ids"]


# --------------------------------------------------------------------------- choosing


def _config(tmp_path, model: str, **role: object):
    return config_from_dict({"data_dir": str(tmp_path / "data"), "models": {
        "embedder": {"model": model, **role}, "reranker": {"model": model},
        "generator": {"model": model}}})


def test_auto_uses_a_running_kbterm_serve_of_the_same_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("KBTERM_DATA_DIR")
    config = _config(tmp_path, "/models/a")
    assert choose(config, "embedder").backend == "local"
    assert choose(config, "embedder").why == "no kbterm serve is running"
    state = ServeState(pid=os.getpid(), url="http://127.0.0.1:1", token="t0k",
                       models={"embedder": "/models/a", "reranker": "/models/other"}, ready=True)
    write_state(config.data_path, state)
    embedder = choose(config, "embedder")
    assert (embedder.backend, embedder.url, embedder.api_key, embedder.kind) == \
        ("server", "http://127.0.0.1:1", "t0k", "kbterm serve")
    assert choose(config, "reranker").backend == "local"
    assert "runs /models/other" in choose(config, "reranker").why
    assert "does not host the generator" in choose(config, "generator").why
    assert (config.data_path / "serve.json").stat().st_mode & 0o777 == 0o600
    # Configured backends beat discovery.
    assert choose(_config(tmp_path, "/models/a", backend="local"), "embedder").backend == "local"


def test_a_stale_or_unready_state_file_is_ignored(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.delenv("KBTERM_DATA_DIR")
    config = _config(tmp_path, "/models/a")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    write_state(config.data_path, ServeState(pid=int(dead), url="http://x:1", token="t",
                                             models={"embedder": "/models/a"}, ready=True))
    assert choose(config, "embedder").backend == "local"
    write_state(config.data_path, ServeState(pid=os.getpid(), url="http://x:1", token="t",
                                             models={"embedder": "/models/a"}, ready=False))
    assert choose(config, "embedder").backend == "local"  # still loading: not usable yet


def test_server_backend_reads_its_key_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "s3cret")
    config = _config(tmp_path, "m/x", backend="server", url="http://gpu:8000",
                     api_key_env="MY_KEY")
    choice = choose(config, "embedder")
    assert (choice.backend, choice.url, choice.api_key) == ("server", "http://gpu:8000", "s3cret")


@pytest.mark.parametrize(("role", "message"), [
    ({"backend": "server"}, "'models.embedder.url' must be set"),
    ({"backend": "cloud"}, "'models.embedder.backend' must be one of auto, local, server"),
    ({"url": "gpu:8000"}, "must be http://host:port"),
    ({"api_key_env": "sk-live-123"}, "must name an environment variable"),
    ({"retries": 50}, "'models.embedder.retries' must be between 0 and 10"),
])
def test_backend_settings_are_checked(tmp_path, role, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _config(tmp_path, "m/x", **role)


# --------------------------------------------------------------------------- the wire


# vLLM's documented request (examples/pooling/embed/vision_embedding_online.py, run_qwen3_vl):
VLLM_EMBEDDING_EXAMPLE = {
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Represent the user's input."}]},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.invalid/cat_snow.jpg"}},
            {"type": "text", "text": "A cat standing in the snow."},
        ]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}]},
    ],
    "model": "Qwen/Qwen3-VL-Embedding-2B",
    "encoding_format": "float",
    "continue_final_message": True,
    "add_special_tokens": True,
}
# vLLM's documented rerank requests (examples/pooling/score/vision_rerank_api_online.py):
VLLM_RERANK_EXAMPLE = {
    "model": "Qwen/Qwen3-VL-Reranker-2B",
    "query": "A woman playing with her dog on a beach at sunset.",
    "documents": ["A woman shares a joyful moment with her golden retriever.",
                  {"content": [{"type": "text", "text": "A woman shares a joyful moment."}]},
                  {"content": [{"type": "image_url",
                                "image_url": {"url": "https://example.invalid/demo.jpeg"}}]}],
}


def test_embedding_request_is_vllms_chat_shape_with_the_contracts_prompt():
    body = embedding_request("Qwen/Qwen3-VL-Embedding-2B", ["A cat.", Image(picture(1))],
                             "Find pictures", VisionLimits(), dimensions=256)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == [{"type": "text", "text": "Find pictures."}]
    user = body["messages"][1]["content"]
    assert [p["type"] for p in user] == ["image_url", "text"]  # pictures before text
    assert user[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["add_generation_prompt"] is True and body["continue_final_message"] is False
    assert body["encoding_format"] == "base64" and body["dimensions"] == 256
    assert "mm_processor_kwargs" not in body  # vLLM 0.33 refuses per-request processor kwargs
    # Same structure as vLLM's example: the same keys in every message and part.
    example_user = VLLM_EMBEDDING_EXAMPLE["messages"][1]["content"]
    assert {k for p in user for k in p} == {k for p in example_user for k in p}
    json.dumps(body)  # serialisable as it is


def test_empty_input_is_sent_as_null_text():
    body = embedding_request("m", [], "x", VisionLimits())
    assert body["messages"][1]["content"] == [{"type": "text", "text": "NULL"}]


def test_wire_items_come_back_with_the_same_pixels_and_parts():
    image = picture(2)
    frames = [picture(10 + i, (64, 64)) for i in range(3)]
    body = embedding_request("m", [Video(frames, fps=1.0), Image(image), "caption"],
                             "x", VisionLimits(), frame_rate=True)
    assert body["mm_processor_kwargs"] == {"fps": 1.0}
    system, user = system_and_user(body["messages"])
    assert system == "x."
    item = item_from_content(user, decode, max_frames=64, fps=1.0)
    video, img, text = item
    assert isinstance(video, Video) and video.fps == 1.0 and len(video.source) == 3
    assert [np.asarray(f).tolist() for f in video.source] == \
        [np.asarray(f).tolist() for f in frames]
    assert np.array_equal(np.asarray(img.source), np.asarray(image))
    assert text == "caption"


def decode(data: bytes) -> PILImage.Image:
    import io

    im = PILImage.open(io.BytesIO(data))
    im.load()
    return im


def test_the_server_reads_vllms_documented_rerank_documents():
    out = [item_from_content(d, decode, max_frames=4)
           for d in VLLM_RERANK_EXAMPLE["documents"][:2]]
    assert out == ["A woman shares a joyful moment with her golden retriever.",
                   "A woman shares a joyful moment."]
    from kbterm.backends.wire import WireError

    with pytest.raises(WireError, match="inline as data: URLs"):  # no fetching of URLs
        item_from_content(VLLM_RERANK_EXAMPLE["documents"][2], decode, max_frames=4)


def test_rerank_request_has_vllms_fields():
    body = rerank_request("Qwen/Qwen3-VL-Reranker-2B", "a query",
                          ["text doc", Image(picture(3))], "Judge it", VisionLimits())
    assert set(VLLM_RERANK_EXAMPLE) <= set(body)
    assert body["query"] == "a query" and body["documents"][0] == "text doc"
    assert body["documents"][1]["content"][0]["type"] == "image_url"
    assert body["instruction"] == "Judge it"
    assert body["chat_template_kwargs"] == {"instruction": "Judge it"}


def test_chat_messages_round_trip_to_the_local_generator():
    from kbterm.backends.base import Evidence
    from kbterm.backends.wire import chat_request
    from kbterm.models.generator import answer_messages

    image = picture(4)
    messages = answer_messages("What?", [Evidence(1, "a.txt", text="x"),
                                         Evidence(2, "p.png", image=image)], VisionLimits())
    body = chat_request("m", messages, max_tokens=8, temperature=0.0)
    assert body["stream"] is True and body["max_tokens"] == 8 and body["seed"] == 0
    back = local_chat(body["messages"], decode, VisionLimits())
    assert [m["role"] for m in back] == ["system", "user"]
    parts = back[1]["content"]
    assert [p["type"] for p in parts] == [p["type"] for p in messages[1]["content"]]
    pic = next(p for p in parts if p["type"] == "image")
    assert np.array_equal(np.asarray(pic["image"]), np.asarray(image))
    assert parts[-1] == {"type": "text", "text": "\nQuestion: What?"}


# --------------------------------------------------------------------------- streams, errors

# Lines of a vLLM chat completion stream (vLLM 0.33's serialisation).
VLLM_STREAM = [
    'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"Qwen/Qwen3-VL-2B-Instruct","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}',  # noqa: E501
    "",
    'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"Qwen/Qwen3-VL-2B-Instruct","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null,"token_ids":null}],"kv_transfer_params":null}',  # noqa: E501
    ": keep-alive",
    'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"Qwen/Qwen3-VL-2B-Instruct","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":null,"weight_versions":null}],"kv_transfer_params":null}',  # noqa: E501
    'data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"Qwen/Qwen3-VL-2B-Instruct","choices":[],"usage":{"prompt_tokens":20,"total_tokens":25,"completion_tokens":5}}',  # noqa: E501
    "data: [DONE]",
]


def test_a_vllm_stream_gives_its_text_and_ends_at_done():
    pieces = [sse_piece(line) for line in VLLM_STREAM]
    assert pieces == ["", "", "Hello", "", "", "", None]


def test_an_error_mid_stream_is_one_line():
    line = 'data: {"error":{"message":"engine died","type":"InternalServerError","param":null,"code":500}}'  # noqa: E501
    with pytest.raises(BackendProtocolError, match="failed mid-answer: engine died"):
        sse_piece(line, "http://gpu:8000")


@pytest.mark.parametrize(("body", "message"), [
    (b'{"error":{"message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}}',  # noqa: E501
     "The model `x` does not exist."),
    (b'{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}',
     "too long"),
    (b'{"error": "Unauthorized"}', "Unauthorized"),
    (b'{"detail": "Not Found"}', "Not Found"),
    (b"<html>502 Bad Gateway</html>", "<html>502 Bad Gateway</html>"),
])
def test_error_bodies_of_every_vintage_are_read(body, message):
    assert error_message(body) == message


# --------------------------------------------------------------------------- coalescing


def test_concurrent_submissions_share_calls_and_a_bad_one_fails_alone():
    calls: list[list[int]] = []

    def run(items):
        calls.append(list(items))
        time.sleep(0.02)
        if any(x < 0 for x in items):
            raise ValueError("negative")
        return [x * 2 for x in items]

    coalescer = Coalescer(run, name="test", wait_s=0.05, max_items=64)
    try:
        futures = []

        def client(start: int) -> None:
            for i in range(start, start + 5):
                futures.append((i, coalescer.submit(i)))

        threads = [threading.Thread(target=client, args=(s,)) for s in (0, 100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(f.result(5) for _i, f in futures) == sorted(i * 2 for i, _f in futures)
        bad = coalescer.submit(-1)  # in one batch with a good request
        good = coalescer.submit(7)
        assert good.result(5) == 14
        with pytest.raises(ValueError):
            bad.result(5)
        first_batches = [c for c in calls if -1 not in c and 7 not in c]
        assert sum(len(c) for c in first_batches) == 10
        assert len(first_batches) < 10  # ten requests, fewer model calls
    finally:
        coalescer.close()


# --------------------------------------------------------------------------- serve's binds


def test_serve_needs_an_api_key_for_any_bind_past_loopback(tmp_path, monkeypatch):
    from kbterm.serve.run import api_keys, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    config = config_from_dict({"serve": {"api_key_env": ""}})
    assert api_keys(config, "127.0.0.1", use_socket=False) == []
    assert api_keys(config, "0.0.0.0", use_socket=True) == []  # a socket is not a bind
    with pytest.raises(ConfigError, match="reachable from other machines: set an API key"):
        api_keys(config, "0.0.0.0", use_socket=False)
    keyed = config_from_dict({"serve": {"api_key_env": "KBTERM_TEST_SERVE_API_KEY"}})
    with pytest.raises(ConfigError, match="KBTERM_TEST_SERVE_API_KEY, which is not set"):
        api_keys(keyed, "0.0.0.0", use_socket=False)
    monkeypatch.setenv("KBTERM_TEST_SERVE_API_KEY", "k3y")
    assert api_keys(keyed, "0.0.0.0", use_socket=False) == ["k3y"]
