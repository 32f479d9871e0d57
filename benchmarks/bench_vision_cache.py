"""The reranker's vision cache (issue #15): 20 mixed documents (17 texts, 3 images) scored for
a second, different query, with the cache (filled by the first query) vs without.

Search as you type reranks mostly the same candidates for the next keystroke; what the vision
tower made of each candidate picture does not depend on the query, so the cache keeps it
(``kbterm.models.visioncache``).  Both sides run ``Reranker.score`` with kbterm's batching and
shared query prefix; the baseline is ``Reranker(vision_cache_mb=0)`` (the model's own forward,
the tower on every pass).  Each timed run is a query neither side has seen; the cached side was
warmed by the first query only (so its cache holds the documents' pictures, as after the first
keystroke).  Medians over ``--repeats`` queries.

The checkpoint is bench_models.py's small random Qwen3-VL (4 text layers of hidden 256, a
2-layer vision tower of hidden 128, a 16k BPE tokenizer trained on the corpus's long text), on
the CPU in float32; ``--checkpoint`` runs another folder (e.g. the 2B-shaped one that
``bench_2b_cpu.py --keep`` leaves) with ``--dtype``.

    python benchmarks/bench_vision_cache.py
    python benchmarks/bench_vision_cache.py --checkpoint /tmp/q2b --dtype float32 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_models import rerank_documents, text_path

QUERIES = [
    "How do I extract the text of a PDF page with PyMuPDF?",
    "Which photo shows the beach at sunset?",
    "What does the slide say about page rendering?",
    "how to open an encrypted document",
    "table of contents of the handbook",
    "a picture of a street with people",
    "install the package from source",
    "what fonts does the renderer support",
]


def scored(model, queries, docs) -> tuple[float, list[list[float]]]:
    """Median seconds of one ``score`` per query, and the scores."""
    times, scores = [], []
    for query in queries:
        start = time.perf_counter()
        scores.append(model.score(query, docs))
        times.append(time.perf_counter() - start)
    return statistics.median(times), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed queries (at most 7)")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint folder to use instead")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON")
    args = parser.parse_args()

    import torch

    from kbterm.models.base import ModelSpec
    from kbterm.models.random_checkpoint import build_random_checkpoint
    from kbterm.models.reranker import Reranker

    first, timed_queries = QUERIES[0], QUERIES[1:1 + args.repeats]
    docs = rerank_documents(np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or build_random_checkpoint(
            Path(tmp) / "small-qwen3-vl", text_hidden=256, text_layers=4, text_heads=4,
            kv_heads=2, vision_hidden=128, vision_depth=2, vision_heads=4, vocab_size=16000,
            training_text=text_path().read_text(encoding="utf-8").splitlines(),
        )
        spec = ModelSpec("reranker", str(ckpt), device="cpu", dtype=args.dtype)
        lengths = None
        results = {}
        for name, model in (("without", Reranker(spec, vision_cache_mb=0)),
                            ("with", Reranker(spec))):
            model.score(first, docs)  # load, warm up; fills the cache of the cached side
            if lengths is None:
                lengths = [model.encode(first, d).length for d in docs]
            results[name] = scored(model, timed_queries, docs)
            if name == "with":
                cache = model.vision_cache
                stats = {"entries": len(cache), "megabytes": cache.nbytes / 2**20,
                         "hits": cache.hits, "misses": cache.misses}
                # Where the cached side's time goes: input preparation (the same both ways).
                start = time.perf_counter()
                for d in docs:
                    model.encode(timed_queries[0], d)
                encode_s = time.perf_counter() - start
            model.release()
    (t_without, s_without), (t_with, s_with) = results["without"], results["with"]
    diff = float(np.abs(np.array(s_without) - np.array(s_with)).max())
    out = {
        "checkpoint": "small random" if args.checkpoint is None else str(args.checkpoint),
        "dtype": args.dtype, "torch_threads": torch.get_num_threads(),
        "documents": len(docs), "images": sum(not isinstance(d, str) for d in docs),
        "pair_tokens": [min(lengths), max(lengths), sum(lengths)],
        "queries_timed": len(timed_queries), "without_s": t_without, "with_s": t_with,
        "ratio": t_without / t_with, "max_abs_diff": diff, "encode_s": encode_s, "cache": stats,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['checkpoint']} checkpoint, {args.dtype}, {out['torch_threads']} torch threads; "
          f"medians of {len(timed_queries)} queries after a first one\n")
    print("| set | without the vision cache | with it | speed-up | max abs diff |")
    print("|---|---|---|---|---|")
    p = out["pair_tokens"]
    print(f"| 1 new query, {out['documents']} documents ({out['documents'] - out['images']} "
          f"texts, {out['images']} images), {p[0]}-{p[1]} tokens a pair ({p[2]} in all) | "
          f"{t_without:.2f} s | {t_with:.2f} s | **{out['ratio']:.2f}x** | {diff:.1e} |")
    print(f"\nInput preparation of the 20 pairs (both sides): {encode_s:.2f} s. Cache after the "
          f"run: {stats['entries']} pictures, {stats['megabytes']:.1f} MB, {stats['hits']} hits, "
          f"{stats['misses']} misses.")


if __name__ == "__main__":
    main()
