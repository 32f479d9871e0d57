"""The reranker on a tiny random Qwen3-VL checkpoint: batched scores equal single-pair scores."""

from __future__ import annotations

import pytest

from kbterm.models.base import ModelSpec
from kbterm.models.inputs import Image, Video
from kbterm.models.reranker import KEEP_TAIL, SYSTEM_PROMPT, Reranker

TOL = 1e-4


@pytest.fixture(scope="module")
def documents(corpus):
    images = corpus / "images"
    return [
        "a short note",
        "a long document about the terminal knowledge base and its retrieval pipeline " * 10,
        images / "docpage_0.jpg",
        Image(images / "photo_3.jpg"),
        Video(corpus / "video" / "example.mp4"),
        ["caption beside a photo", images / "beach.jpeg"],
        [],
    ]


@pytest.mark.parametrize("query_kind", ["text", "image", "mixed"])
def test_batched_scores_equal_single_pair_scores(reranker, documents, corpus, query_kind):
    query = {
        "text": "what does the slide say?",
        "image": corpus / "images" / "photo_4.jpg",
        "mixed": ["find this place", corpus / "images" / "photo_4.jpg"],
    }[query_kind]
    batched = reranker.score(query, documents)
    assert len(batched) == len(documents)
    assert all(0.0 < s < 1.0 for s in batched)
    for doc, score in zip(documents, batched):
        assert abs(reranker.score(query, [doc])[0] - score) <= TOL
    if query_kind == "text":  # (the order of batch mates is the same code for every query)
        reversed_ = reranker.score(query, documents[::-1])[::-1]
        assert max(abs(a - b) for a, b in zip(reversed_, batched)) <= TOL


def test_twenty_documents_batched_with_a_shared_prefix(tiny_model_dir):
    spec = ModelSpec("reranker", str(tiny_model_dir), dtype="float32")
    docs = [f"document number {i} " + "words " * (i % 4) for i in range(20)]
    query = "which document talks about the quarterly report?"
    model = Reranker(spec)
    scores = model.score(query, docs)
    assert model.forward_calls < 10  # one prefix pass + a few batches
    reference = Reranker(spec, batch_tokens=1, share_prefix=False)  # one whole pair per pass
    singles = reference.score(query, docs)
    assert reference.forward_calls == 20
    assert max(abs(a - b) for a, b in zip(scores, singles)) <= TOL
    no_prefix = Reranker(spec, share_prefix=False)
    batched_whole = no_prefix.score(query, docs)
    assert no_prefix.forward_calls < 10
    assert max(abs(a - b) for a, b in zip(batched_whole, singles)) <= TOL
    assert len(set(round(s, 6) for s in scores)) > 1  # scores depend on the document


def test_shared_prefix_stops_before_the_query_image(reranker, corpus):
    from kbterm.models.reranker import shared_prefix_length

    image = corpus / "images" / "photo_4.jpg"
    pairs = [reranker.encode(["find this", image], doc) for doc in ("one", "two words")]
    prefix = shared_prefix_length(pairs)
    first_visual = int((pairs[0].mm_token_type_ids != 0).nonzero()[0])
    assert 0 < prefix <= first_visual
    text_pairs = [reranker.encode("same query", doc) for doc in ("alpha", "beta gamma")]
    n = shared_prefix_length(text_pairs)
    tok = reranker._encoder.processor.tokenizer
    assert tok.decode(text_pairs[0].input_ids[:n]).endswith("<Document>:")


def test_message_format_follows_the_contract(reranker, corpus):
    msgs = reranker.messages("the query", ["doc text", corpus / "images" / "photo_0.jpg"])
    assert msgs[0]["content"][0]["text"] == SYSTEM_PROMPT
    parts = msgs[1]["content"]
    assert parts[0] == {"type": "text", "text": "<Instruct>: Given a search query, retrieve "
                        "relevant candidates that answer the query."}
    assert parts[1] == {"type": "text", "text": "<Query>:"}
    assert parts[2] == {"type": "text", "text": "the query"}
    assert parts[3] == {"type": "text", "text": "\n<Document>:"}
    assert [p["type"] for p in parts[4:]] == ["image", "text"]
    empty = reranker.messages([], [])
    assert [p.get("text") for p in empty[1]["content"][1:]] == ["<Query>:", "NULL",
                                                                "\n<Document>:", "NULL"]
    custom = reranker.messages("q", "d", instruction="Find tax forms")
    assert custom[1]["content"][0]["text"] == "<Instruct>: Find tax forms"


def test_over_long_pair_keeps_generation_prompt_and_special_tokens(tiny_model_dir, corpus):
    model = Reranker(ModelSpec("reranker", str(tiny_model_dir), dtype="float32"), max_length=80)
    full = Reranker(ModelSpec("reranker", str(tiny_model_dir), dtype="float32"), max_length=100_000)
    doc = ["lots of words " * 300, corpus / "images" / "photo_1.jpg"]
    enc, ref = model.encode("query", doc), full.encode("query", doc)
    assert enc.truncated and not ref.truncated
    ids, ref_ids = enc.input_ids.tolist(), ref.input_ids.tolist()
    assert ids[-KEEP_TAIL:] == ref_ids[-KEEP_TAIL:]
    tok = model._encoder.processor.tokenizer
    assert tok.decode(ids[-KEEP_TAIL:]).endswith("<|im_start|>assistant\n")
    special = model._encoder.special_ids
    assert [t for t in ids if t in special] == [t for t in ref_ids if t in special]
    score = model.score("query", [doc])[0]
    assert 0.0 < score < 1.0


def test_no_documents(reranker):
    assert reranker.score("anything", []) == []


def _tower_calls(model: Reranker) -> list[int]:
    """A counter of the vision tower's forward passes (a forward hook on the real tower)."""
    calls = [0]
    model._model.visual.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_vision_cache_keeps_scores_and_skips_the_tower_for_seen_images(tiny_model_dir, documents,
                                                                         corpus):
    spec = ModelSpec("reranker", str(tiny_model_dir), device="cpu", dtype="float32")
    cold = Reranker(spec, vision_cache_mb=0)  # the model's own forward, tower on every pass
    cached = Reranker(spec)
    cached.load()
    tower = _tower_calls(cached)
    first = cached.score("what does the slide say?", documents)
    assert max(abs(a - b) for a, b in zip(first, cold.score("what does the slide say?",
                                                            documents))) <= TOL
    seen = tower[0]
    assert seen == 4  # docpage_0, photo_3, the video, beach: each once
    assert cached.vision_cache.misses == 4 and len(cached.vision_cache) == 4
    # The next, different query (an image and text): only its own picture goes through the
    # tower, once for all pairs; the documents' features come from the cache.
    query = ["find this place", corpus / "images" / "photo_4.jpg"]
    second = cached.score(query, documents)
    assert tower[0] - seen == 1
    assert cached.vision_cache.hits >= 4
    reference = cold.score(query, documents)
    assert max(abs(a - b) for a, b in zip(second, reference)) <= TOL
    assert max(abs(a - b) for a, b in zip(second, first)) > 1e-3  # another query, other scores
    assert cached.vision_cache.nbytes <= cached.vision_cache.max_bytes


def test_vision_cache_follows_the_pixels_and_the_model(tiny_model_dir, corpus, tmp_path):
    import shutil

    spec = ModelSpec("reranker", str(tiny_model_dir), device="cpu", dtype="float32")
    model, cold = Reranker(spec), Reranker(spec, vision_cache_mb=0)
    picture = tmp_path / "page.jpg"
    shutil.copy(corpus / "images" / "photo_1.jpg", picture)
    before = model.score("a query", [picture])[0]
    copy = tmp_path / "elsewhere" / "same.jpg"  # the same bytes under another name: a hit
    copy.parent.mkdir()
    shutil.copy(picture, copy)
    assert model.score("a query", [copy])[0] == before
    assert model.vision_cache.hits == 1
    shutil.copy(corpus / "images" / "photo_2.jpg", picture)  # changed in place: a miss
    after = model.score("a query", [picture])[0]
    assert model.vision_cache.misses == 2
    assert abs(after - cold.score("a query", [picture])[0]) <= TOL and abs(after - before) > 1e-6
    model.release()  # a model loaded again starts with an empty cache
    assert model.vision_cache is None
    model.load()
    assert len(model.vision_cache) == 0 and model.vision_cache.hits == 0
    assert Reranker(spec, vision_cache_mb=0).vision_cache is None


def test_vision_cache_drops_the_least_recently_used_past_its_bound():
    import torch

    from kbterm.models.visioncache import Features, VisionCache

    def feats(n: int) -> Features:  # n rows of 4 float32: 16 n bytes, twice (one DeepStack layer)
        return Features(torch.zeros(n, 4), (torch.zeros(n, 4),))

    cache = VisionCache(max_bytes=1000)
    cache.put("a", feats(10))  # 320 bytes
    cache.put("b", feats(10))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", feats(10))  # 960 bytes: all fit
    cache.put("d", feats(10))  # over the bound: b goes (least recently used)
    assert cache.get("b") is None and cache.get("a") is not None
    assert cache.nbytes == 960 and len(cache) == 3
    cache.put("huge", feats(100))  # larger than the whole bound: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3
