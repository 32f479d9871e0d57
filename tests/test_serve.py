"""A real ``kbterm serve`` (a subprocess on the tiny checkpoint, any free port) and the server
backend against it: the same vectors, scores and greedy answers as in process; vLLM's response
shapes; the API key; limits; coalescing; a stream that stops with its client; a server killed in
the middle of an index run."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import REPO, run_commands, write_config_file
from kbterm.backends.base import Evidence
from kbterm.backends.client import ServerEmbedder, ServerGenerator, ServerReranker
from kbterm.backends.http import Endpoint
from kbterm.config import load_config
from kbterm.errors import BackendUnavailable, InputError
from kbterm.models.inputs import Image, Video
from kbterm.serve.state import ServeState, read_state

SERVE_SETTINGS = """
[serve]
port = 0
max_documents = 8
max_image_pixels = 2000000
max_request_mb = 4
batch_wait_ms = 30
"""


def picture(seed: int, size: tuple[int, int] = (96, 64)) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    return PILImage.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"), "RGB")


def png_url(image: PILImage.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def kbterm(args: list[str], config: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KBTERM_DATA_DIR"}
    return subprocess.run([sys.executable, "-m", "kbterm", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def start_foreground(config: Path, data: Path) -> tuple[subprocess.Popen, ServeState]:
    from kbterm.serve.state import wait_ready

    env = {k: v for k, v in os.environ.items() if k != "KBTERM_DATA_DIR"}
    proc = subprocess.Popen([sys.executable, "-m", "kbterm", "--config", str(config), "serve",
                             "--log-file", str(data.parent / "serve-fg.log")], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = wait_ready(data, proc.pid, timeout=120)
    assert state is not None, (data.parent / "serve-fg.log").read_text()
    return proc, state


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    """``kbterm serve --detach`` on the tiny checkpoint; stopped with ``--stop`` at the end."""
    root = tmp_path_factory.mktemp("serve")
    data = root / "data"
    config = write_config_file(root / "config.toml", tiny_model_dir, SERVE_SETTINGS,
                               data_dir=data, generator="max_new_tokens = 16\n")
    started = kbterm(["serve", "--detach"], config)
    assert started.returncode == 0, started.stderr
    assert "running in the background" in started.stdout
    state = read_state(data)
    assert state is not None and state.ready and state.url.startswith("http://127.0.0.1:")
    yield config, state
    stopped = kbterm(["serve", "--stop"], config)
    assert stopped.returncode == 0, stopped.stderr
    assert read_state(data, ready_only=False) is None  # the state file goes with the server
    assert not (data / "serve.json").exists()


def endpoint(state: ServeState, **kw) -> Endpoint:
    return Endpoint(state.url, state.token, **kw)


def stats(state: ServeState) -> dict:
    return httpx.get(state.url + "/kbterm/v1/stats",
                     headers={"Authorization": f"Bearer {state.token}"}).json()


def server_config(tmp_path: Path, model: Path, state: ServeState, monkeypatch) -> Path:
    """A config whose three roles use the server (its key from an environment variable)."""
    monkeypatch.setenv("KBTERM_TEST_SERVE_KEY", state.token)
    roles = "".join(f'[models.{r}]\nmodel = "{model}"\nbackend = "server"\nurl = "{state.url}"\n'
                    f'api_key_env = "KBTERM_TEST_SERVE_KEY"\n'
                    + ("max_new_tokens = 16\n" if r == "generator" else "")
                    for r in ("embedder", "reranker", "generator"))
    path = tmp_path / "server.toml"
    path.write_text('[models]\ndevice = "cpu"\ndtype = "float32"\n' + roles)
    return path


# --------------------------------------------------------------------------- equality


def test_vectors_equal_the_in_process_ones(served, tiny_model_dir, embedder):
    _config, state = served
    client = ServerEmbedder(endpoint(state), model=str(tiny_model_dir),
                            instruction="Represent the user's input.")
    frames = [picture(20 + i, (64, 64)) for i in range(4)]
    # (A PDF page comes as RGBX, PIL's padded RGB, which PNG cannot hold.)
    page = picture(6).convert("RGBX")
    items = ["a note about the budget", "中文笔记：预算会议", "한국어 메모", Image(picture(1)),
             ["a caption", Image(picture(2))], Video(frames, fps=1.0), [], Image(page),
             Video([f.convert("RGBX") for f in frames], fps=1.0)]
    got, want = client.embed(items), embedder.embed(items)
    assert got.shape == want.shape == (len(items), 64)
    assert np.abs(got - want).max() <= 1e-5
    query = "Retrieve images or text relevant to the user's query."
    assert np.abs(client.embed(["budget"], query) - embedder.embed(["budget"], query)).max() \
        <= 1e-5
    assert client.host().kind == "kbterm serve"
    assert client.tokenizer()("budget")["input_ids"] == \
        embedder.tokenizer()("budget")["input_ids"]


def test_matryoshka_dimensions_equal_the_in_process_ones(served, tiny_model_dir):
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder

    _config, state = served
    client = ServerEmbedder(endpoint(state), model=str(tiny_model_dir), dimension=32,
                            instruction="Represent the user's input.")
    local = Embedder(ModelSpec("embedder", str(tiny_model_dir), device="cpu", dtype="float32"),
                     dimension=32)
    items = ["short text", Image(picture(3))]
    got, want = client.embed(items), local.embed(items)
    assert got.shape == (2, 32) and np.abs(got - want).max() <= 1e-5
    assert client.dimension == 32


def test_scores_equal_the_in_process_ones(served, tiny_model_dir, reranker, tmp_path):
    _config, state = served
    client = ServerReranker(endpoint(state), model=str(tiny_model_dir),
                            instruction=reranker.default_instruction)
    docs = ["kbterm keeps an index", Image(picture(4)), "会议纪要", ["caption", Image(picture(5))]]
    got = client.score("what does kbterm do?", docs)
    want = reranker.score("what does kbterm do?", docs)
    assert len(got) == 4 and max(abs(a - b) for a, b in zip(got, want)) <= 1e-4
    # A document whose picture is gone: None and the reason, the rest still scored.
    unreadable: dict[int, str] = {}
    mixed = client.score("q", ["text", Image(tmp_path / "gone.png")], unreadable=unreadable)
    assert mixed[1] is None and 1 in unreadable and mixed[0] is not None


def test_greedy_answers_equal_the_in_process_ones(served, tiny_model_dir, generator):
    _config, state = served
    client = ServerGenerator(endpoint(state), model=str(tiny_model_dir), max_new_tokens=16,
                             temperature=0.0)
    evidence = [Evidence(1, "notes.txt, lines 1-3", text="The budget meeting is on Thursday."),
                Evidence(2, "slide.png", image=picture(6))]
    got = "".join(client.stream("When is the meeting?", evidence))
    want = "".join(generator.stream("When is the meeting?", evidence))
    assert got == want and got
    assert stats(state)["generator"]["last_generated_tokens"] == generator.last_generated_tokens


def test_index_search_and_ask_through_the_server_equal_in_process(
        served, tiny_model_dir, corpus, tmp_path, monkeypatch):
    import shutil

    from kbterm.answer import Asker
    from kbterm.indexer import Indexer
    from kbterm.retrieval import Searcher
    from kbterm.store import Store

    _config, state = served
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "budget.md").write_text("# Budget\n\nThe budget meeting is on Thursday.\n")
    (folder / "cjk.txt").write_text("会议在星期四。预算已经批准。\n")
    shutil.copy(next((corpus / "images").glob("*.jp*g")), folder / "photo.jpg")
    local = write_config_file(tmp_path / "local.toml", tiny_model_dir,
                              generator="max_new_tokens = 16\n")
    remote = server_config(tmp_path, tiny_model_dir, state, monkeypatch)
    results = {}
    for name, path in (("local", local), ("server", remote)):
        monkeypatch.setenv("KBTERM_DATA_DIR", str(tmp_path / f"data-{name}"))
        config = load_config(path)
        summary = Indexer(config).run([folder])
        assert summary.indexed == 3 and not summary.failures
        store = Store(config.data_path)
        keys = [r["chunk_key"] for r in store.live_chunks(["chunk_key"])]
        rows = {k: np.asarray(v) for k, v in store.vectors_for_keys(keys).items()}
        hits = Searcher(config).search("when is the budget meeting?", k=5, rerank=True).hits
        asker = Asker(config)
        answer = asker.prepare("when is the budget meeting?")
        text = "".join(asker.stream(answer))
        results[name] = rows, hits, text
    (lrows, lhits, ltext), (srows, shits, stext) = results["local"], results["server"]
    assert lrows.keys() == srows.keys()
    assert max(np.abs(lrows[k] - srows[k]).max() for k in lrows) <= 1e-5
    assert [h.path for h in lhits] == [h.path for h in shits]
    assert max(abs(a.rerank_score - b.rerank_score) for a, b in zip(lhits, shits)
               if a.rerank_score is not None) <= 1e-4
    assert ltext == stext


# --------------------------------------------------------------------------- the API


def test_the_api_key_is_required(served, tiny_model_dir):
    _config, state = served
    assert httpx.get(state.url + "/health").status_code == 200  # open, like vLLM's
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": state.token}):
        response = httpx.get(state.url + "/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "AuthenticationError"
    client = ServerEmbedder(Endpoint(state.url, "wrong", retries=0), model=str(tiny_model_dir),
                            instruction="x")
    with pytest.raises(BackendUnavailable, match="refused the API key"):
        client.embed(["x"])


def post(state: ServeState, path: str, body, **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(state.url + path, content=content, timeout=60,
                      headers={"Authorization": f"Bearer {state.token}",
                               "Content-Type": "application/json"}, **kw)


def test_responses_have_vllms_documented_shapes(served, tiny_model_dir):
    _config, state = served
    model = str(tiny_model_dir)
    listing = httpx.get(state.url + "/v1/models",
                        headers={"Authorization": f"Bearer {state.token}"}).json()
    assert listing["object"] == "list"
    assert {m["kbterm_role"] for m in listing["data"]} == {"embedder", "reranker", "generator"}
    assert all(m["id"] == model and m["object"] == "model" and m["owned_by"] == "kbterm"
               for m in listing["data"])
    # vLLM's example request (vision_embedding_online.py), with the picture inline.
    body = {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Represent the user's input."}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(picture(7))}},
                                     {"type": "text", "text": "A cat standing in the snow."}]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}]}],
        "model": model, "encoding_format": "float", "continue_final_message": True,
        "add_special_tokens": True}
    emb = post(state, "/v1/embeddings", body).json()
    assert emb["object"] == "list" and emb["model"] == model and emb["id"].startswith("embd-")
    assert [d["object"] for d in emb["data"]] == ["embedding"] and emb["data"][0]["index"] == 0
    vector = np.asarray(emb["data"][0]["embedding"])
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert emb["usage"]["prompt_tokens"] == emb["usage"]["total_tokens"] > 0
    # vLLM's rerank example (vision_rerank_api_online.py): strings and content objects.
    query = "A woman playing with her dog on a beach at sunset."
    documents = ["A woman shares a joyful moment with her golden retriever.",
                 {"content": [{"type": "text", "text": "A dog on a beach."}]},
                 {"content": [{"type": "image_url", "image_url": {"url": png_url(picture(8))}}]}]
    rr = post(state, "/v1/rerank", {"model": model, "query": query, "documents": documents}).json()
    assert rr["model"] == model and rr["usage"]["total_tokens"] > 0
    scores = [r["relevance_score"] for r in rr["results"]]
    assert sorted(r["index"] for r in rr["results"]) == [0, 1, 2]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    first = next(r for r in rr["results"] if r["index"] == 0)
    assert first["document"] == {"text": documents[0], "multi_modal": None}
    top = post(state, "/rerank", {"query": query, "documents": documents, "top_n": 1}).json()
    assert len(top["results"]) == 1 and top["results"][0]["index"] == rr["results"][0]["index"]
    # A streamed chat completion: chunks, a finish reason, [DONE].
    chat = {"model": model, "stream": True, "max_tokens": 4,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Say hello."}]}
    lines = [ln for ln in post(state, "/v1/chat/completions", chat).text.split("\n") if ln]
    assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    full = post(state, "/v1/chat/completions", {**chat, "stream": False}).json()
    assert full["object"] == "chat.completion"
    assert full["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/v1/rerank", {"query": "q", "documents": ["d"] * 9}, 413, "over this server's limit of 8"),
    ("/v1/embeddings", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "IMAGE"}}]}]}, 413, "2000000 pixels"),
    ("/v1/embeddings", b"x" * (5 << 20), 413, "over this server's limit"),
    ("/v1/embeddings", b"{not json", 400, "not JSON"),
    ("/v1/embeddings", {"messages": [{"role": "user", "content": [{"type": "audio_url"}]}]},
     400, "unknown content part type"),
    ("/v1/embeddings", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     400, "inline as data: URLs"),
    ("/v1/embeddings", {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]},
     404, "does not exist here"),
])
def test_bad_requests_get_clear_4xx_errors(served, path, body, status, words):
    _config, state = served
    if isinstance(body, dict) and "IMAGE" in json.dumps(body):
        big = PILImage.new("RGB", (1600, 1400), (200, 30, 30))  # 2.24 MP, a small PNG
        body = json.loads(json.dumps(body).replace("IMAGE", png_url(big)))
    response = post(state, path, body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]


def test_concurrent_clients_get_their_own_results_in_fewer_passes(served, tiny_model_dir,
                                                                  embedder):
    _config, state = served
    texts = {name: [f"{name} note number {i}" for i in range(6)] for name in ("ann", "bob")}
    got: dict[str, np.ndarray] = {}
    before = stats(state)["embedder"]

    def client(name: str) -> None:
        backend = ServerEmbedder(endpoint(state), model=str(tiny_model_dir), in_flight=6,
                                 instruction="Represent the user's input.")
        got[name] = backend.embed(texts[name])

    threads = [threading.Thread(target=client, args=(n,)) for n in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = stats(state)["embedder"]
    for name, vectors in got.items():
        assert np.abs(vectors - embedder.embed(texts[name])).max() <= 1e-5
    requests = after["requests"] - before["requests"]
    passes = after["forward_passes"] - before["forward_passes"]
    assert requests >= 12 and passes < requests


def test_a_stream_stops_when_its_client_goes_away(served, tiny_model_dir):
    _config, state = served
    body = {"stream": True, "max_tokens": 2000, "messages": [{"role": "user", "content": "Go."}]}
    with httpx.stream("POST", state.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {state.token}"}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # the role chunk
        assert next(l for l in lines if l).startswith("data: ")  # a first piece of text
    # Closed: the server stops generating after its current token.
    deadline = time.monotonic() + 30
    while stats(state)["generator"]["streams_open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    made = stats(state)["generator"]["last_generated_tokens"]
    assert stats(state)["generator"]["streams_open"] == 0 and 0 < made < 2000
    # The same through the backend: cancelling the stream closes the connection.
    client = ServerGenerator(endpoint(state), model=str(tiny_model_dir), max_new_tokens=2000,
                             temperature=0.0)
    stream = client.stream("Go on.", [])
    assert next(stream)
    stream.close()
    deadline = time.monotonic() + 30
    while stats(state)["generator"]["streams_open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(state)["generator"]["last_generated_tokens"] < 2000


# --------------------------------------------------------------------------- failure


def test_a_server_killed_mid_index_loses_nothing_and_the_next_run_resumes(
        tmp_path, index_model_dir, index_serve, monkeypatch):
    """A server of the index checkpoint is killed mid-run; the next run goes to another server
    of the same checkpoint on another port (the session's, already warm)."""
    from indexing_helpers import check_consistent

    from kbterm.indexer import Indexer
    from kbterm.store import STATUS_INDEXED, Store

    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(12):
        (folder / f"note{i:02}.txt").write_text(f"Note {i}: " + "some words here. " * 40)
    data = tmp_path / "serve-data"
    serve_toml = write_config_file(tmp_path / "serve.toml", index_model_dir,
                                   '[serve]\nport = 0\nroles = ["embedder"]\n', data_dir=data)
    proc, state = start_foreground(serve_toml, data)
    monkeypatch.setenv("KBTERM_DATA_DIR", str(tmp_path / "index"))
    # Small groups and commits, so that some files are in the index when the server dies.
    monkeypatch.setattr("kbterm.indexer.EMBED_GROUP_TEXTS", 2)
    monkeypatch.setattr("kbterm.indexer.COMMIT_FILES", 2)

    def client_config(state: ServeState):
        path = server_config(tmp_path, index_model_dir, state, monkeypatch)
        path.write_text(path.read_text().replace('backend = "server"\n',
                                                 'backend = "server"\nretries = 0\n'))
        return load_config(path)

    killed = []

    def progress(phase, done, total, current):
        if phase == "index" and done >= 8 and not killed:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed.append(done)

    with pytest.raises(BackendUnavailable, match="cannot be reached"):
        Indexer(client_config(state), progress=progress).run([folder])
    assert killed
    store = Store(tmp_path / "index")
    done = {p for p, r in store.ledger().items() if r.status == STATUS_INDEXED}
    assert 1 <= len(done) < 12
    assert all(r.status == STATUS_INDEXED for r in store.ledger().values())  # none "failed"
    config = client_config(state)
    check_consistent(config)
    assert index_serve.url != state.url
    summary = Indexer(client_config(index_serve)).run([folder])
    assert summary.indexed == 12 - len(done) and not summary.failures
    assert len(Store(tmp_path / "index").ledger()) == 12
    check_consistent(client_config(index_serve))


def test_an_input_the_server_refuses_fails_only_its_file(served, tiny_model_dir):
    _config, state = served
    client = ServerEmbedder(endpoint(state), model=str(tiny_model_dir), instruction="x")
    with pytest.raises(InputError, match="rejected the input"):
        client.embed([Image(PILImage.new("RGB", (1600, 1400)))])  # over serve.max_image_pixels


def test_commands_find_the_running_serve_and_the_doctor_vouches_for_it(served, tmp_path):
    config, state = served
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("The budget meeting is on Thursday.\n")
    # Index, the doctor and a search, in one process served by the warm host: none imports
    # torch or transformers (the doctor asks for no CUDA when no model runs in this process).
    env = {k: v for k, v in os.environ.items() if k != "KBTERM_DATA_DIR"}
    (indexed, doctor, text, search), imported = run_commands(
        [["--config", str(config), *args] for args in
         (["index", str(folder), "--json"], ["doctor", "--json"], ["doctor"],
          ["search", "budget", "--json"])], env=env)
    assert indexed.returncode == 0, indexed.stderr
    assert json.loads(indexed.stdout)["indexed"] == 1
    assert doctor.returncode == text.returncode == search.returncode == 0, doctor.stderr
    report = json.loads(doctor.stdout)
    for m in report["models"]:
        assert (m["backend"], m["host"], m["url"]) == ("server", "kbterm serve", state.url)
        assert (m["device"], m["dtype"]) == ("cpu", "float32")
        assert m["latency_s"] is not None  # kbterm serve measured it when it started
    assert [p["role"] for p in report["servers"]] == ["embedder", "reranker", "generator"]
    assert all(p["ok"] for p in report["servers"]), report["servers"]
    assert report["cuda"] is None
    assert f"kbterm serve at {state.url}" in text.stdout and "expected latency" in text.stdout
    assert "cuda          not checked (every model runs on a server)" in text.stdout
    assert json.loads(search.stdout)["results"][0]["metadata"]["source"].endswith("a.txt")
    assert imported == []  # neither torch nor transformers


def test_a_unix_socket_serve_is_found_and_used(tmp_path, tiny_model_dir, embedder, monkeypatch):
    from kbterm.backends import get_embedder

    data = tmp_path / "data"
    toml = write_config_file(tmp_path / "socket.toml", tiny_model_dir,
                             '[serve]\nsocket = true\nroles = ["embedder"]\n', data_dir=data)
    proc, state = start_foreground(toml, data)
    try:
        assert state.url == f"unix://{data / 'serve.sock'}"
        assert (data / "serve.sock").stat().st_mode & 0o777 == 0o600
        monkeypatch.delenv("KBTERM_DATA_DIR")
        backend = get_embedder(load_config(toml))  # auto: found through serve.json
        assert backend.host().kind == "kbterm serve"
        assert np.abs(backend.embed(["over a socket"]) - embedder.embed(["over a socket"])).max() \
            <= 1e-5
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not (data / "serve.sock").exists() and read_state(data, ready_only=False) is None


def test_score_takes_vllms_pairings_and_agrees_with_rerank(served, tiny_model_dir, reranker):
    _config, state = served
    docs = ["kbterm keeps an index", "a recipe for soup"]
    one_to_n = post(state, "/score", {"queries": "what is kbterm?", "documents": docs}).json()
    assert one_to_n["object"] == "list" and [d["object"] for d in one_to_n["data"]] == \
        ["score", "score"]
    want = reranker.score("what is kbterm?", docs)
    assert max(abs(d["score"] - w) for d, w in zip(one_to_n["data"], want)) <= 1e-4
    pairs = post(state, "/v1/score", {"text_1": ["what is kbterm?", "soup?"], "text_2": docs})
    got = [d["score"] for d in pairs.json()["data"]]
    assert abs(got[0] - want[0]) <= 1e-4
    assert abs(got[1] - reranker.score("soup?", [docs[1]])[0]) <= 1e-4
    bad = post(state, "/score", {"queries": ["a", "b"], "documents": ["x", "y", "z"]})
    assert bad.status_code == 400 and "1:1, 1:N or N:N" in bad.json()["error"]["message"]
