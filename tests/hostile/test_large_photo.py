"""One large photo (more than Pillow's 179-megapixel bomb limit, under kbterm's 300) or one
damaged picture never fails a search, a rerank, an answer or a preview: every path that opens
an image for a model applies the indexer's bounded, reduced-size decoding."""

from __future__ import annotations

import pytest
from PIL import Image

from indexing_helpers import explicit_data_dir, make_config, run_index
from kbterm.retrieval import Searcher

pytestmark = pytest.mark.usefixtures(explicit_data_dir.__name__)

W, H = 16_320, 12_240  # 200 megapixels, as some phones take


@pytest.fixture(scope="module")
def library(tmp_path_factory, index_model_dir, index_embedder):
    root = tmp_path_factory.mktemp("photos")
    folder = root / "library"
    folder.mkdir()
    big = Image.new("L", (W, H), 90)
    big.paste(200, (2000, 2000, 9000, 7000))
    big.save(folder / "huge.jpg", quality=80)
    del big
    Image.new("RGB", (640, 480), (10, 120, 200)).save(folder / "sea.png")
    Image.new("RGB", (640, 480), (200, 120, 10)).save(folder / "sand.png")
    (folder / "note.md").write_text("# Holiday\n\nA photo of the sea and the sand.\n")
    config = make_config(index_model_dir, root / "data", [folder])
    config.ask.min_rerank_score = 0.0
    summary = run_index(config, embedder=index_embedder)
    assert summary.indexed == 4, summary.failures
    return folder, config


@pytest.fixture
def searcher(library, index_embedder, reranker):
    _folder, config = library
    return Searcher(config, embedder=index_embedder, reranker=reranker)


def test_a_200_megapixel_photo_is_reranked_like_any_other(library, searcher, monkeypatch):
    folder, _ = library
    # A search process starts with Pillow's own limit (the indexer raised it in this one);
    # the photo is over it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    assert W * H > 2 * Image.MAX_IMAGE_PIXELS
    results = searcher.search("a photo", k=10, rerank=True)
    scored = {h.path.rsplit("/", 1)[-1]: h.rerank_score for h in results.hits}
    assert scored["huge.jpg"] is not None and 0 < scored["huge.jpg"] < 1
    assert not [w for w in results.warnings if "not reranked" in w]


def test_an_unreadable_candidate_costs_only_itself(library, searcher, tmp_path):
    folder, _ = library
    damaged = folder / "sand.png"
    original = damaged.read_bytes()
    damaged.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # the index still lists it
    try:
        results = searcher.search("a photo", k=10, rerank=True)
    finally:
        damaged.write_bytes(original)
    by_name = {h.path.rsplit("/", 1)[-1]: h for h in results.hits}
    assert by_name["sand.png"].rerank_score is None
    assert by_name["sea.png"].rerank_score is not None
    assert by_name["huge.jpg"].rerank_score is not None
    warnings = [w for w in results.warnings if "not reranked" in w]
    assert len(warnings) == 1 and "sand.png" in warnings[0]
    # Unscored hits go after the scored ones.
    order = [h.rerank_score is None for h in results.hits[:results.reranked]]
    assert order == sorted(order)


def test_an_answer_with_an_unreadable_picture_still_comes(library, index_embedder, reranker,
                                                          generator):
    from kbterm.models.generator import Evidence

    folder, _ = library
    evidence = [Evidence(1, "sand.png", image=folder / "missing.png"),
                Evidence(2, "huge.jpg", image=folder / "huge.jpg"),
                Evidence(3, "note.md", text="A photo of the sea and the sand.")]
    messages = generator.messages("What is in the photos?", evidence)
    parts = messages[1]["content"]
    images = [p for p in parts if p["type"] == "image"]
    assert len(images) == 1  # the readable one, reduced to the model's size
    w, h = images[0]["image"].size
    assert w * h <= generator.limits.image_max_pixels
    assert any("could not be read" in p.get("text", "") for p in parts)
    assert "".join(generator.stream("What is in the photos?", evidence, max_new_tokens=3))


def test_the_preview_decodes_a_huge_photo_at_a_preview_size(library):
    from kbterm.ingest.image import load_preview

    folder, _ = library
    picture = load_preview(folder / "huge.jpg", 2_000_000)
    assert picture.size[0] * picture.size[1] <= 2_000_000
    assert picture.size[0] / picture.size[1] == pytest.approx(W / H, rel=0.05)
