"""The embedder on a tiny random Qwen3-VL checkpoint: real loading, real forward passes."""

from __future__ import annotations

import numpy as np
import pytest

from kbterm.models.base import ModelSpec
from kbterm.models.embedder import Embedder
from kbterm.models.inputs import Image, Video

TOL = 1e-4


@pytest.fixture(scope="module")
def mixed(corpus):
    images = corpus / "images"
    return [
        "hello world",
        "a much longer passage about terminal knowledge bases and retrieval " * 12,
        images / "photo_0.jpg",
        Image(images / "docpage_1.jpg"),
        Video(corpus / "video" / "example.mp4"),
        ["a caption next to its photo", images / "beach.jpeg"],
        "short",
        [],
    ]


def test_shapes_norms_and_dtype(embedder, mixed):
    vectors = embedder.embed(mixed)
    assert vectors.shape == (len(mixed), 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # different inputs give different vectors
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3
    assert np.abs(vectors[2] - vectors[3]).max() > 1e-3


def test_vector_does_not_depend_on_batch_mates_or_order(embedder, mixed):
    together = embedder.embed(mixed)
    for i, item in enumerate(mixed):
        alone = embedder.embed([item])[0]
        assert np.abs(alone - together[i]).max() <= TOL, i
    reversed_ = embedder.embed(mixed[::-1])[::-1]
    assert np.abs(reversed_ - together).max() <= TOL


def test_batches_follow_the_token_budget(tiny_model_dir, mixed):
    from kbterm.models.encoding import plan_batches

    model = Embedder(ModelSpec("embedder", str(tiny_model_dir), dtype="float32"))
    encoded = [model.encode(item) for item in mixed]
    lengths = [e.length for e in encoded]
    budget = 2 * max(lengths)
    model.batch_tokens = budget
    plan = plan_batches(lengths, budget)
    for batch in plan:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget
    batched = model.embed(mixed)
    assert model.forward_calls == len(plan)
    assert 1 < len(plan) < len(mixed)
    # against the naive plan: every input in one padded batch
    one_batch = model._forward(encoded)
    assert np.abs(batched - one_batch).max() <= TOL


def test_video_as_file_and_as_frames(embedder, corpus):
    from PIL import Image as PILImage

    frames = [PILImage.open(corpus / "images" / f"photo_{i % 5}.jpg") for i in range(100)]
    message = embedder.messages(Video(frames))
    part = message[1]["content"][0]
    assert part["type"] == "video" and len(part["video"]) == 64  # thinned to max_frames
    vectors = embedder.embed([Video(frames), Video(corpus / "video" / "example.mp4")])
    assert vectors.shape == (2, 64)
    enc = embedder.encode(Video(corpus / "video" / "example.mp4"))
    assert enc.video_grid_thw is not None and enc.pixel_values_videos is not None


def test_message_format_follows_the_contract(embedder, corpus):
    msgs = embedder.messages(["text first", corpus / "images" / "photo_1.jpg",
                              Video(corpus / "video" / "example.mp4")])
    assert msgs[0] == {"role": "system",
                       "content": [{"type": "text", "text": "Represent the user's input."}]}
    kinds = [p["type"] for p in msgs[1]["content"]]
    assert kinds == ["video", "image", "text"]
    image = msgs[1]["content"][1]
    assert image["min_pixels"] == 4096 and image["max_pixels"] == 1_843_200
    video = msgs[1]["content"][0]
    assert video["fps"] == 1.0 and video["max_frames"] == 64
    assert video["total_pixels"] == 7_864_320
    empty = embedder.messages([])
    assert empty[1]["content"] == [{"type": "text", "text": "NULL"}]


def test_instruction_is_punctuated_and_changes_the_vector(embedder):
    msgs = embedder.messages("query", instruction="Find photos of beaches")
    assert msgs[0]["content"][0]["text"] == "Find photos of beaches."
    doc, query = embedder.embed(["beach"]), embedder.embed(["beach"], "Find photos of beaches")
    assert np.abs(doc - query).max() > 1e-3
    same = embedder.embed(["beach"], "Find photos of beaches.")
    assert np.abs(same - query).max() <= TOL  # the '.' was added, so these are identical


def test_empty_inputs(embedder):
    assert embedder.embed([]).shape == (0, 64)
    null = embedder.embed([[]])
    assert null.shape == (1, 64) and np.isfinite(null).all()


def test_over_long_input_keeps_special_tokens(tiny_model_dir, corpus):
    model = Embedder(ModelSpec("embedder", str(tiny_model_dir), dtype="float32"), max_length=64)
    long_text = "the quick brown fox jumps over the lazy dog " * 200
    full = Embedder(ModelSpec("embedder", str(tiny_model_dir), dtype="float32"), max_length=100_000)
    item = [long_text, corpus / "images" / "photo_2.jpg"]
    untruncated = full.encode(item)
    enc = model.encode(item)
    assert enc.truncated and not untruncated.truncated
    special = model._encoder.special_ids
    ids, full_ids = enc.input_ids.tolist(), untruncated.input_ids.tolist()
    assert [t for t in ids if t in special] == [t for t in full_ids if t in special]
    n_special = sum(t in special for t in full_ids)
    assert len(ids) == max(64, n_special)
    assert enc.mm_token_type_ids.shape == enc.input_ids.shape
    # ordinary tokens kept are the first ones
    ordinary = [t for t in ids if t not in special]
    assert ordinary == [t for t in full_ids if t not in special][: len(ordinary)]
    vector = model.embed([item])
    assert vector.shape == (1, 64) and np.isfinite(vector).all()


def test_mrl_dimension_is_a_prefix_renormalised(tiny_model_dir, embedder):
    small = Embedder(ModelSpec("embedder", str(tiny_model_dir), dtype="float32"), dimension=32)
    texts = ["one", "two three", "four five six"]
    full = embedder.embed(texts)
    short = small.embed(texts)
    assert short.shape == (3, 32) and small.dimension == 32
    expected = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    assert np.abs(short - expected).max() <= TOL
    too_big = Embedder(ModelSpec("embedder", str(tiny_model_dir), dtype="float32"), dimension=128)
    with pytest.raises(Exception, match="dimension 128"):
        too_big.load()


def test_unreadable_image_is_a_clear_error(embedder, tmp_path):
    from kbterm.errors import InputError

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(InputError, match="broken.jpg: not a readable image"):
        embedder.embed([bad])


def test_release_and_reload(tiny_model_dir):
    model = Embedder(ModelSpec("embedder", str(tiny_model_dir), dtype="float32"))
    before = model.embed(["same text"])
    model.release()
    assert not model.loaded
    after = model.embed(["same text"])
    assert model.loaded
    assert np.abs(before - after).max() <= TOL


def test_long_lists_are_encoded_in_windows_with_progress(tiny_model_dir, mixed, embedder):
    from kbterm.models.base import WINDOW_BUDGETS

    reference = embedder.embed(mixed)
    model = Embedder(ModelSpec("embedder", str(tiny_model_dir), dtype="float32"), batch_tokens=256)
    lengths = [model.encode(item).length for item in mixed]
    assert sum(lengths) > 3 * WINDOW_BUDGETS * 256  # several windows
    seen = []
    vectors = model.embed(mixed, progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 2
    assert seen[-1] == (len(mixed), len(mixed))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert np.abs(vectors - reference).max() <= TOL
