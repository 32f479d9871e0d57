"""Retrieval with the tiny model: vector + keyword candidates, fusion, filters, reranking,
the vector cache, and ``kbterm search``.  Random weights rank meaninglessly, so these tests check
plumbing against independent computations (cosines from the stored vectors, reranker scores
computed directly), never relevance."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_commands, write_config_file
from indexing_helpers import kbterm, make_config, run_index
from kbterm.models.base import ModelSpec
from kbterm.models.embedder import Embedder
from kbterm.retrieval import Filters, Hit, NoIndex, Searcher
from kbterm.store import Store


@pytest.fixture(autouse=True)
def _explicit_data_dir(monkeypatch):
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)


NOTES = {
    "tides.md": "# Tides\n\nSpring tides follow the new moon and the full moon.\n",
    "lamps.txt": "The lighthouse lamp is trimmed at dusk by the keeper.\n",
    "xylo.txt": "A xylophonic melody drifted over the harbour at night.\n",
    "rope.md": "# Rigging\n\nHemp rope swells when wet; nylon rope does not.\n",
    "ledger.json": '{"entry": "cargo of salt and timber", "ship": "Albatross"}',
}


@pytest.fixture(scope="module")
def library(tmp_path_factory, corpus, index_model_dir, index_embedder):
    root = tmp_path_factory.mktemp("retrieval")
    folder = root / "library"
    (folder / "notes").mkdir(parents=True)
    for name, text in NOTES.items():
        (folder / "notes" / name).write_text(text)
    (folder / "media").mkdir()
    shutil.copy(corpus / "images" / "beach.jpeg", folder / "media" / "beach.jpeg")
    shutil.copy(corpus / "pdf" / "small-table.pdf", folder / "media" / "small-table.pdf")
    config = make_config(index_model_dir, root / "data", [folder])
    summary = run_index(config, embedder=index_embedder)
    assert summary.failed == 0 and summary.indexed == 7
    return config, folder


@pytest.fixture(scope="module")
def searcher(library, index_embedder, reranker):
    config, _folder = library
    return Searcher(config, embedder=index_embedder, reranker=reranker)


def stored_vectors(config) -> dict[str, np.ndarray]:
    table = Store(config.data_path).chunks_table
    rows = table.search().select(["id", "vector"]).limit(None).to_arrow().to_pylist()
    return {r["id"]: np.asarray(r["vector"], dtype=np.float32) for r in rows}


def test_vector_scores_are_the_exact_cosines_and_ranking(searcher, library, index_embedder):
    config, _ = library
    results = searcher.search("harbour lamp at dusk", k=50, rerank=False)
    query = index_embedder.embed(["harbour lamp at dusk"],
                                 instruction=config.models.embedder.query_instruction)[0]
    exact = {i: float(v @ query) for i, v in stored_vectors(config).items()}
    assert len(results.hits) == len(exact)  # every chunk is a candidate at this size
    for hit in results.hits:
        assert hit.embedding_score == pytest.approx(exact[hit.id], abs=2e-3)
    by_cosine = sorted(results.hits, key=lambda h: -h.embedding_score)
    assert [h.id for h in by_cosine[:10]] == sorted(exact, key=lambda i: -exact[i])[:10]


def test_keyword_match_is_found_and_fused(searcher):
    results = searcher.search("xylophonic", k=5, rerank=False)
    top = results.hits[0]
    assert top.path.endswith("xylo.txt")
    assert top.keyword_score is not None and top.keyword_score > 0
    assert top.embedding_score is not None  # in both lists
    assert "xylophonic" in top.snippet and top.content.startswith("A xylophonic")
    others = [h for h in results.hits[1:] if h.keyword_score is not None]
    assert not others  # no other chunk has the word


def test_reciprocal_rank_fusion_order(searcher):
    fused = searcher._fuse([(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 12.0), (4, 9.0)])
    order = [n for n, *_ in fused]
    # 3 is in both lists (1/63 + 1/61) and beats 1 (1/61); 2 and 4 tie at 1/62 (second in
    # their lists) and keep chunk order.
    assert order == [3, 1, 2, 4]
    n, cosine, bm25, score = fused[0]
    assert (cosine, bm25) == (0.7, 12.0)
    assert score == pytest.approx(1 / 63 + 1 / 61)


def test_reranker_order_is_applied_with_the_real_scores(searcher, reranker, library):
    config, _ = library
    results = searcher.search("rope for rigging", k=7, rerank=True)
    n = min(config.search.rerank, 7)
    assert results.reranked == n and len(results.hits) == 7
    head = results.hits[:n]
    assert all(h.rerank_score is not None for h in head)
    assert [h.rerank_score for h in head] == sorted((h.rerank_score for h in head),
                                                    reverse=True)
    from kbterm.models.inputs import Image

    docs = [h.content if h.modality == "text" else Image(Path(h.image_path)) for h in head]
    direct = reranker.score("rope for rigging", docs)
    assert [h.rerank_score for h in head] == pytest.approx(direct, abs=1e-4)
    assert [h.rank for h in results.hits] == list(range(1, len(results.hits) + 1))
    # Fewer results asked for: the reranker still sees the same candidates.
    two = searcher.search("rope for rigging", k=2, rerank=True)
    assert [h.id for h in two.hits] == [h.id for h in results.hits[:2]]


def test_filters(searcher, library):
    config, folder = library
    pdf = searcher.search("boiling points", k=20, rerank=False, filters=Filters(types=("pdf",)))
    assert pdf.hits and {h.file_type for h in pdf.hits} == {"pdf"}
    images = searcher.search("beach", k=20, rerank=False,
                             filters=Filters(modalities=("image",)))
    assert {h.modality for h in images.hits} == {"image"}
    assert {os.path.basename(h.path) for h in images.hits} == {"beach.jpeg", "small-table.pdf"}
    page = next(h for h in images.hits if h.file_type == "pdf")
    assert page.page == 1 and Path(page.image_path).is_file()  # the rendered page
    under = searcher.search("rope", k=20, rerank=False,
                            filters=Filters(paths=(str(folder / "notes"),)))
    assert under.hits and all(h.path.startswith(str(folder / "notes") + "/")
                              for h in under.hits)
    glob = searcher.search("rope", k=20, rerank=False, filters=Filters(paths=("*.md",)))
    assert {os.path.basename(h.path) for h in glob.hits} == {"tides.md", "rope.md"}
    future = searcher.search("rope", k=20, rerank=False,
                             filters=Filters(modified_after=time.time() + 3600))
    assert future.hits == []
    past = searcher.search("rope", k=20, rerank=False,
                           filters=Filters(modified_before=time.time() + 3600))
    assert len(past.hits) == searcher.chunk_count


def test_image_query(searcher, library, index_embedder, corpus):
    config, _ = library
    results = searcher.search(image=corpus / "images" / "beach.jpeg", k=3, rerank=False)
    assert results.hits
    beach = next(h for h in results.hits if h.path.endswith("beach.jpeg"))
    assert beach.modality == "image" and beach.image_path == beach.path
    assert beach.keyword_score is None
    from kbterm.models.inputs import Image

    query = index_embedder.embed([Image(corpus / "images" / "beach.jpeg")],
                                 instruction=config.models.embedder.query_instruction)[0]
    stored = stored_vectors(config)[beach.id]
    assert beach.embedding_score == pytest.approx(float(stored @ query), abs=2e-3)


def test_a_video_clip_is_a_query(library, index_model_dir, reranker, corpus, capsys, tmp_path):
    """The fourth kind of query: a clip (1 frame a second, at most 64), with or without text;
    its vector is the embedder's for the same clip, and another span is another query."""
    from kbterm.cli import main
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder
    from kbterm.models.inputs import Video

    config, _ = library
    # (The contract's video limits: the index embedder's small ones are below a video file's
    # minimum frame size.)
    embedder = Embedder(ModelSpec("embedder", str(index_model_dir), device="cpu",
                                  dtype="float32"))
    searcher = Searcher(config, embedder=embedder, reranker=reranker)
    video = corpus / "video" / "example.mp4"
    clip = Video(video, start=0.0, end=2.0)
    results = searcher.search("", clip, k=50, rerank=False)
    assert results.image == f"{video} (0-2 s)"
    query = embedder.embed([clip], instruction=config.models.embedder.query_instruction)[0]
    stored = stored_vectors(config)
    scored = [h for h in results.hits if h.embedding_score is not None]
    assert len(scored) == len(stored)  # (a clip alone: every chunk by its cosine)
    for hit in scored:
        assert hit.embedding_score == pytest.approx(float(stored[hit.id] @ query), abs=2e-3)
    other = searcher.search("", Video(video, start=1.0), k=50, rerank=False)  # (2 s long)
    assert [h.embedding_score for h in other.hits] != [h.embedding_score for h in results.hits]
    mixed = searcher.search("harbour lamp", clip, k=5)  # with text, and reranked
    assert mixed.hits and mixed.reranked

    # kbterm search --video CLIP --start S --end S gives the same list.
    cfg_file = write_config_file(tmp_path / "c.toml", index_model_dir, data_dir=config.data_path)
    capsys.readouterr()
    try:
        main(["--config", str(cfg_file), "search", "--video", str(video), "--start", "0",
              "--end", "2", "--no-rerank", "-k", "50", "--json"])
    except SystemExit as exc:
        assert not exc.code
    shown = json.loads(capsys.readouterr().out)["results"]
    assert [r["id"] for r in shown] == [h.id for h in results.hits]
    for args, words in ((["--end", "2"], "--start and --end go with --video"),
                        (["--video", str(video), "--start", "3", "--end", "1"],
                         "must come after --start"),
                        (["--video", str(video), "--start", "5"], "past the end of"),
                        (["--video", str(video), "--image", str(video)], "not both")):
        with pytest.raises(SystemExit) as exc:
            main(["--config", str(cfg_file), "search", "x", *args])
        assert exc.value.code == 2 and words in capsys.readouterr().err


def test_fallback_to_keywords_when_the_embedder_cannot_load(library, tmp_path):
    config, _ = library
    broken = Embedder(ModelSpec("embedder", str(tmp_path / "no-such-model"), device="cpu", dtype="float32"))
    results = Searcher(config, embedder=broken).search("xylophonic", k=5, rerank=False)
    assert len(results.warnings) == 1 and "keyword matches only" in results.warnings[0]
    assert [os.path.basename(h.path) for h in results.hits] == ["xylo.txt"]
    assert results.hits[0].embedding_score is None


def test_empty_index(tmp_path, index_model_dir, index_embedder):
    config = make_config(index_model_dir, tmp_path / "data", [])
    with pytest.raises(NoIndex, match="kbterm index"):
        Searcher(config, embedder=index_embedder).search("anything")
    cfg_file = write_config_file(tmp_path / "c.toml", index_model_dir, data_dir=tmp_path / "d")
    proc = kbterm(["--config", str(cfg_file), "search", "anything"])
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "no index yet" in err and "Traceback" not in err


def test_cache_follows_the_index_incrementally(tmp_path, index_model_dir, index_embedder):
    folder = tmp_path / "lib"
    folder.mkdir()
    for i in range(6):
        (folder / f"n{i}.txt").write_text(f"Note {i} about the north pier.\n")
    config = make_config(index_model_dir, tmp_path / "data", [folder])
    run_index(config, embedder=index_embedder)
    searcher = Searcher(config, embedder=index_embedder)
    assert len(searcher.search("pier", k=50, rerank=False).hits) == 6
    def ids_lines() -> int:
        state = json.loads((tmp_path / "data" / "cache" / "vectors.json").read_text())
        return len((tmp_path / "data" / "cache" / state["generation"] / "ids.txt")
                   .read_text().splitlines())

    assert ids_lines() == 6

    # A torn append (vectors written, ids not) leaves stray bytes: the next append cuts them.
    state = json.loads((tmp_path / "data" / "cache" / "vectors.json").read_text())
    with open(tmp_path / "data" / "cache" / state["generation"] / "vectors.f16", "ab") as fh:
        fh.write(b"\x7f" * 1000)
    (folder / "n6.txt").write_text("A new note about the south pier.\n")
    (folder / "n0.txt").unlink()
    run_index(config, embedder=index_embedder)
    hits = searcher.search("pier", k=50, rerank=False).hits
    assert sorted(os.path.basename(h.path) for h in hits) == [f"n{i}.txt" for i in range(1, 7)]
    assert ids_lines() == 7  # one appended, the dead row masked
    query = index_embedder.embed(["pier"], instruction=config.models.embedder.query_instruction)[0]
    exact = {i: float(v @ query) for i, v in stored_vectors(config).items()}
    for h in hits:
        assert h.embedding_score == pytest.approx(exact[h.id], abs=2e-3)
    # A second process (a fresh searcher) reuses the cache and agrees.
    again = Searcher(config, embedder=index_embedder).search("pier", k=50, rerank=False).hits
    assert [(h.id, h.embedding_score) for h in again] == [(h.id, h.embedding_score)
                                                          for h in hits]
    for i in range(1, 5):  # most rows dead: the cache is rewritten
        (folder / f"n{i}.txt").unlink()
    run_index(config, embedder=index_embedder)
    hits = searcher.search("pier", k=50, rerank=False).hits
    assert sorted(os.path.basename(h.path) for h in hits) == ["n5.txt", "n6.txt"]
    assert ids_lines() == 2
    assert len(list((tmp_path / "data" / "cache").glob("v-*"))) == 1


def test_citations():
    def hit(**kw):
        base = dict(rank=1, id="x", path="/d/report.pdf", file_type="pdf", modality="text",
                    content="", snippet="")
        return Hit(**{**base, **kw})

    assert hit(page=12).citation() == "report.pdf, page 12"
    assert hit(path="/v/talk.mp4", start_s=83.0, end_s=113.0).citation() == \
        "talk.mp4 @ 01:23-01:53"
    assert hit(path="/n/a.md", line_start=4, line_end=9).citation() == "a.md, lines 4-9"
    assert hit(path="/v/long.mp4", start_s=3725.0, end_s=3755.0).citation() == \
        "long.mp4 @ 1:02:05-1:02:35"


def test_search_json_shape(library, index_model_dir, index_serve, tmp_path):
    config, _ = library
    cfg_file = write_config_file(tmp_path / "c.toml", index_model_dir,
                                 data_dir=config.data_path, served=index_serve)
    proc = kbterm(["--config", str(cfg_file), "search", "rope", "-k", "3", "--json"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert set(data) >= {"query", "results", "total_time_ms"} and data["query"] == "rope"
    assert len(data["results"]) == 3
    for n, r in enumerate(data["results"], start=1):
        assert r["rank"] == n
        assert set(r) >= {"rank", "id", "content", "embedding_score", "rerank_score",
                          "metadata"}
        assert set(r["metadata"]) >= {"source", "page", "start_s", "end_s", "image_path"}
        assert Path(r["metadata"]["source"]).exists()
    assert data["results"][0]["rerank_score"] is not None
    proc = kbterm(["--config", str(cfg_file), "search", "rope", "--no-rerank", "--type", "pdf",
                   "--json"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert all(r["rerank_score"] is None and r["metadata"]["source"].endswith(".pdf")
               for r in data["results"])


# --------------------------------------------------------------------------- ask


def test_evidence_selection_budget_and_relevance(library, searcher):
    from dataclasses import replace as dc_replace

    from kbterm.answer import select_evidence

    config, _ = library
    results = searcher.search("rope", k=7, rerank=False)
    for i, hit in enumerate(results.hits):
        hit.rerank_score = 0.9 if i % 2 == 0 else 0.1  # odd ones "irrelevant"
    ask = dc_replace(config.ask, evidence=3, max_images=1, min_rerank_score=0.5)
    chosen = select_evidence(results, dc_replace(config, ask=ask))
    assert len(chosen) <= 3
    assert all(h.rerank_score == 0.9 for h in chosen)
    assert sum(h.modality != "text" for h in chosen) <= 1
    assert [h.rank for h in chosen] == sorted(h.rank for h in chosen)


def test_citations_are_checked_against_the_evidence():
    from kbterm.answer import Answer

    hits = [Hit(rank=i, id=str(i), path=f"/d/f{i}.pdf", file_type="pdf", modality="text",
                content="", snippet="", page=i) for i in (1, 2, 3)]
    answer = Answer("q", evidence=hits, text="Tides rise [2]. Also [9] and [2][1].")
    assert answer.citations == [2, 1]  # [9] is not evidence
    assert answer.sources_text() == "[2] f2.pdf, page 2\n[1] f1.pdf, page 1"
    assert Answer("q", evidence=hits, text="No citations.").sources_text().count("\n") == 2


def test_ask_streams_an_answer_with_sources(library, searcher, generator):
    from kbterm.answer import Asker

    config, _ = library
    from dataclasses import replace as dc_replace

    config = dc_replace(config, ask=dc_replace(config.ask, min_rerank_score=0.0))
    asker = Asker(config, searcher=searcher, generator=generator)
    answer = asker.prepare("What do spring tides follow?")
    assert 1 <= len(answer.evidence) <= config.ask.evidence
    pieces = list(asker.stream(answer))
    assert len(pieces) >= 2 and "".join(pieces) == answer.text  # streamed in pieces
    data = answer.to_json()
    assert [s["n"] for s in data["sources"]] == list(range(1, len(answer.evidence) + 1))
    assert all(Path(s["source"]).exists() for s in data["sources"])
    assert set(data["citations"]) <= {s["n"] for s in data["sources"]}


def test_ask_without_relevant_evidence_says_so(library, searcher, generator):
    from dataclasses import replace as dc_replace

    from kbterm.answer import Asker, NoEvidence

    config, _ = library
    strict = dc_replace(config, ask=dc_replace(config.ask, min_rerank_score=0.999))
    calls = generator.last_generated_tokens
    with pytest.raises(NoEvidence, match="relevant"):
        Asker(strict, searcher=searcher, generator=generator).prepare("anything at all")
    assert generator.last_generated_tokens == calls  # nothing generated


def test_ask_cli(library, index_model_dir, index_serve, tmp_path):
    config, _ = library
    cfg_file = write_config_file(tmp_path / "c.toml", index_model_dir,
                                 "[ask]\nmin_rerank_score = 0.0\n", data_dir=config.data_path,
                                 generator="max_new_tokens = 8\n", served=index_serve)
    text = cfg_file.read_text()
    strict = tmp_path / "strict.toml"
    strict.write_text(text.replace("min_rerank_score = 0.0", "min_rerank_score = 0.999"))
    # The answer model is missing (in-process, no weights); the other two are served.
    missing = tmp_path / "missing.toml"
    head, generator = text.split("[models.generator]\n")
    missing.write_text(head + f'[models.generator]\nmodel = "{tmp_path / "nope"}"\n'
                       + generator.split("\n", 4)[4])
    question = "What follows the new moon?"
    (as_json, plain, refused, empty, no_model), _ = run_commands([
        ["--config", str(cfg_file), "ask", question, "--json"],
        ["--config", str(cfg_file), "ask", question],
        ["--config", str(strict), "ask", question],
        ["--config", str(cfg_file), "ask", ""],
        ["--config", str(missing), "ask", question]])
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["question"] == question and isinstance(data["answer"], str)
    assert data["sources"] and all(Path(s["source"]).exists() for s in data["sources"])
    assert plain.returncode == 0, plain.stderr
    assert "\n\nSources:\n[1] " in plain.stdout
    assert refused.returncode == 1 and "no answer" in refused.stdout
    assert empty.returncode == 2
    assert no_model.returncode == 1 and "Traceback" not in no_model.stderr
    assert "kbterm pull generator" in no_model.stderr
    assert "Most relevant sources:\n[1] " in no_model.stderr


def test_rerank_stops_before_the_next_batch_once_cancelled(library, searcher, tiny_model_dir):
    import threading

    from kbterm.errors import Cancelled
    from kbterm.models.reranker import Reranker

    class Counting(Reranker):
        """Counts forward passes; the first one asks to stop (a newer keystroke)."""

        def __init__(self, *args, cancel_on_first=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.passes = 0
            self.cancel_on_first = cancel_on_first

        def _run(self, inputs, **kwargs):
            self.passes += 1
            if self.cancel_on_first is not None:
                self.cancel_on_first.set()
            return super()._run(inputs, **kwargs)

    config, _ = library
    spec = ModelSpec("reranker", str(tiny_model_dir), device="cpu", dtype="float32")
    # One pair per batch and no shared-prefix pass: each candidate is its own forward pass.
    full = Counting(spec, batch_tokens=1)
    full.share_prefix = False
    Searcher(config, embedder=searcher.embedder, reranker=full).search("rope", k=5)
    assert full.calls >= 5

    cancel = threading.Event()
    stopping = Counting(spec, batch_tokens=1, cancel_on_first=cancel)
    stopping.share_prefix = False
    stopped = Searcher(config, embedder=searcher.embedder, reranker=stopping)
    results = stopped.retrieve("rope", k=5)
    before = [(h.id, h.rerank_score) for h in results.hits]
    with pytest.raises(Cancelled):
        stopped.rerank(results, k=5, cancel=cancel)
    assert stopping.calls == 1  # stopped before the second batch
    assert [(h.id, h.rerank_score) for h in results.hits] == before  # left as it was

    cancel.clear()
    stopping.cancel_on_first = None
    done = stopped.rerank(results, k=5, cancel=cancel)  # not cancelled: reranks as usual
    assert all(h.rerank_score is not None for h in done.hits)


def test_context_is_the_source_lines_around_a_text_hit(tmp_path, index_model_dir,
                                                         index_embedder):
    folder = tmp_path / "lib"
    folder.mkdir()
    lines = [f"entry {n}: the tide table for the harbour" for n in range(1, 401)]
    lines[199] = "the zeppelin moored above the quay"
    (folder / "log.txt").write_text("\n".join(lines) + "\n")
    (folder / "menu.txt").write_bytes("Café crème\nthé glacé\nzeppelin torte\n".encode("cp1252"))
    config = make_config(index_model_dir, tmp_path / "data", [folder])
    run_index(config, embedder=index_embedder)
    searcher = Searcher(config, embedder=index_embedder)
    hits = searcher.search("zeppelin", k=50, rerank=False).hits
    hit = next(h for h in hits if h.path.endswith("log.txt") and "zeppelin" in h.content)
    assert hit.line_start < 200 <= hit.line_end

    context = searcher.context(hit, lines=5)
    assert context.first_line == hit.line_start - 5
    assert len(context.lines) == hit.line_end - hit.line_start + 1 + 10
    assert context.lines == lines[context.first_line - 1: hit.line_end + 5]
    assert (context.hit_start, context.hit_end) == (hit.line_start, hit.line_end)

    # Decoded as the indexer decoded it (cp1252 here), so its lines are the chunk's lines.
    menu = next(h for h in hits if h.path.endswith("menu.txt"))
    assert searcher.context(menu).lines == menu.content.splitlines() == [
        "Café crème", "thé glacé", "zeppelin torte"]

    # Changed since it was indexed: its line numbers may be off, so no context.
    with open(folder / "log.txt", "a") as f:
        f.write("one more line\n")
    os.utime(folder / "log.txt", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert searcher.context(hit) is None


def test_parse_when():
    from kbterm.errors import InputError
    from kbterm.retrieval import parse_when

    assert parse_when("7d") == pytest.approx(time.time() - 7 * 86400, abs=5)
    assert parse_when("12h") == pytest.approx(time.time() - 12 * 3600, abs=5)
    assert parse_when("2026-11-01") == pytest.approx(
        time.mktime((2026, 11, 1, 0, 0, 0, 0, 0, -1)), abs=1)
    with pytest.raises(InputError, match="after: 'yesterday' is not a date"):
        parse_when("yesterday", "after")


def test_image_for_renders_the_page_of_a_pdf_text_hit(searcher, library):
    config, _ = library
    hits = searcher.search("table", k=50, rerank=False).hits
    text_hit = next(h for h in hits if h.file_type == "pdf" and h.modality == "text")
    assert text_hit.image_path is None
    page = Path(searcher.image_for(text_hit))
    assert page.is_file() and config.data_path in page.parents
    from PIL import Image

    with Image.open(page) as im:
        assert im.width > 100 and im.height > 100
    image_hit = next(h for h in hits if h.file_type == "image")
    assert searcher.image_for(image_hit) == image_hit.path
    assert searcher.image_for(next(h for h in hits if h.file_type == "markdown")) is None


def test_a_query_typed_again_is_not_embedded_again(library, index_embedder, tmp_path):
    """Query vectors are kept (kbterm/querycache.py): the same text, or the same picture
    content, reuses its vector; a new picture at the same path is embedded."""
    from PIL import Image as PILImage

    config, _ = library
    searcher = Searcher(config, embedder=index_embedder)
    first = searcher.search("spring tides", k=5, rerank=False)
    calls = index_embedder.calls
    searcher.search("spring tide", k=5, rerank=False)  # backspace...
    assert index_embedder.calls == calls + 1
    again = searcher.search("spring tides", k=5, rerank=False)  # ... and retype
    assert index_embedder.calls == calls + 1
    assert [(h.id, h.embedding_score) for h in again.hits] == \
        [(h.id, h.embedding_score) for h in first.hits]

    picture = tmp_path / "query.png"
    PILImage.new("RGB", (64, 48), (200, 30, 30)).save(picture)
    red = searcher._embed_query("", str(picture))
    calls = index_embedder.calls
    assert np.array_equal(searcher._embed_query("", str(picture)), red)
    assert index_embedder.calls == calls
    PILImage.new("RGB", (64, 48), (30, 30, 200)).save(picture)  # another picture, same path
    blue = searcher._embed_query("", str(picture))
    assert index_embedder.calls == calls + 1 and not np.array_equal(blue, red)
    # The cached vector equals a fresh embedding, bit for bit.
    fresh = Searcher(config, embedder=index_embedder)._embed_query("spring tides", None)
    assert np.array_equal(fresh, searcher._embed_query("spring tides", None))


def test_the_query_vector_cache_is_bounded_and_cleared_when_the_index_is_rebuilt(
        library, index_embedder):
    from kbterm.querycache import QueryVectors

    lru = QueryVectors(size=2)
    for n, text in enumerate(["a", "b", "a", "c"]):
        if lru.get(lru.key(text, "i")) is None:
            lru.put(lru.key(text, "i"), np.full(3, n, dtype=np.float32))
    assert len(lru) == 2 and lru.get(lru.key("b", "i")) is None  # least recently used went
    assert lru.get(lru.key("a", "i"))[0] == 0 and lru.get(lru.key("a", "x")) is None

    config, _ = library
    searcher = Searcher(config, embedder=index_embedder)
    searcher.search("full moon", k=3, rerank=False)
    assert len(searcher.query_vectors) == 1
    store = Store(config.data_path)
    meta = store.read_meta()
    meta.created_at += 1  # what a rebuild (maybe with another model) changes
    store.write_meta(meta)
    try:
        searcher.refresh()
        assert len(searcher.query_vectors) == 0
    finally:
        meta.created_at -= 1
        store.write_meta(meta)


def test_the_rerank_budget_takes_texts_first_and_only_what_fits(library, index_embedder,
                                                                reranker):
    """``tui.rerank_budget_ms``: with a measured 100 ms a pair, 350 ms rerank three text
    candidates; the rest follow in fused order, unscored.  Without a budget, all."""
    from kbterm.backends.latency import LATENCY_FILE, record

    config, _ = library
    searcher = Searcher(config, embedder=index_embedder, reranker=reranker)
    record(config.data_path, "reranker", reranker.host(), 0.1)
    try:
        fused = searcher.retrieve("harbour tides rope", k=10)
        assert any(h.modality != "text" for h in fused.hits[:6])  # pictures among the head
        budgeted = searcher.rerank(jobs_copy(fused), k=10, budget_ms=350)
        scored = [h for h in budgeted.hits if h.rerank_score is not None]
        assert budgeted.reranked == 3 and len(scored) == 3
        assert all(h.modality == "text" for h in scored)
        assert budgeted.hits[:3] == scored  # the reranked first, by their scores
        assert [h.rerank_score for h in scored] == sorted((h.rerank_score for h in scored),
                                                          reverse=True)
        assert budgeted.rerank_candidates == min(config.search.rerank, len(fused.hits))
        full = searcher.rerank(jobs_copy(fused), k=10)
        assert full.reranked == min(10, full.rerank_candidates)
        # A budget that fits less than one pair reranks nothing, and the list stays fused.
        none = searcher.rerank(jobs_copy(fused), k=10, budget_ms=50)
        assert none.reranked == 0 and [h.id for h in none.hits] == \
            [h.id for h in fused.hits[:10]]
    finally:
        (config.data_path / LATENCY_FILE).unlink(missing_ok=True)


def jobs_copy(results):
    from dataclasses import replace

    return replace(results, hits=[replace(h) for h in results.hits],
                   timings_ms=dict(results.timings_ms), warnings=list(results.warnings))


def test_the_app_learns_a_pairs_cost_from_a_warm_rerank_only(library, index_embedder,
                                                             tiny_model_dir):
    """The first rerank loads the model: its time is not a pair's cost.  The next one is."""
    from dataclasses import replace

    from kbterm.backends.latency import LATENCY_FILE, expected
    from kbterm.models.base import ModelSpec
    from kbterm.models.reranker import Reranker

    config, _ = library
    cold = Reranker(ModelSpec("reranker", str(tiny_model_dir), device="cpu", dtype="float32"))
    searcher = Searcher(config, embedder=index_embedder, reranker=cold)
    (config.data_path / LATENCY_FILE).unlink(missing_ok=True)
    try:
        fused = searcher.retrieve("rope", k=5)
        texts = replace(fused, hits=[h for h in fused.hits if h.modality == "text"])
        assert not cold.loaded
        searcher.rerank(jobs_copy(texts), k=5, budget_ms=60_000)  # loads the model
        assert cold.loaded and expected(config.data_path, "reranker", cold.host()) is None
        searcher.rerank(jobs_copy(texts), k=5, budget_ms=60_000)
        learned = expected(config.data_path, "reranker", cold.host())
        assert learned is not None and 0 < learned < 5
    finally:
        (config.data_path / LATENCY_FILE).unlink(missing_ok=True)
