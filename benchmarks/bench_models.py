"""Model-layer benchmark: batching by token budget vs the naive alternatives, same run.

* Embedder: kbterm's batching (inputs sorted by length, packed under ``batch_tokens``) against one
  padded batch of every input, on a mixed set (short texts, long texts, a few images).
* Reranker: kbterm's batched scoring against the reference's one pair per forward pass, on
  20 documents of mixed length (texts and a few images) for one query.

Both run the real code (``Embedder.embed``, ``Reranker.score``) on a small random Qwen3-VL
checkpoint (4 text layers of hidden 256, a 2-layer vision tower) built in a temp folder, on the
CPU in float32.  Times are medians over ``--repeats`` runs after a warm-up run.

    python benchmarks/bench_models.py            # prints a Markdown table for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
TEXT = CORPUS / "text" / "pymupdf-llms-full.txt"


def mixed_items(rng: np.random.Generator) -> list:
    words = TEXT.read_text(encoding="utf-8").split()
    items: list = []
    for _ in range(24):  # short texts: queries, titles, captions
        start = int(rng.integers(0, len(words) - 40))
        items.append(" ".join(words[start:start + int(rng.integers(4, 24))]))
    for _ in range(8):  # long texts: chunks of up to ~512 tokens
        start = int(rng.integers(0, len(words) - 600))
        items.append(" ".join(words[start:start + int(rng.integers(150, 420))]))
    images = sorted((CORPUS / "images").glob("*.jp*g"))[:4]
    items.extend(images)
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def rerank_documents(rng: np.random.Generator) -> list:
    items = mixed_items(rng)
    texts = [i for i in items if isinstance(i, str)]
    images = [i for i in items if not isinstance(i, str)]
    docs = texts[:17] + images[:3]
    return [docs[i] for i in rng.permutation(len(docs))]


def timed(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up (also loads the model)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def batch_scaling(model, repeats: int) -> list[tuple[int, float, float]]:
    """Seconds for one pass of 1 row vs 8 identical rows, by sequence length (no padding)."""
    import torch

    rows = []
    for length in (16, 128, 256, 1024):
        ids = torch.randint(10, 300, (1, length))
        batch = ids.repeat(8, 1)

        def run(x):
            with torch.inference_mode():
                return model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)

        single, _ = timed(lambda ids=ids: run(ids), repeats)
        eight, _ = timed(lambda batch=batch: run(batch), repeats)
        rows.append((length, single, eight))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON")
    args = parser.parse_args()

    import torch

    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder
    from kbterm.models.random_checkpoint import build_random_checkpoint
    from kbterm.models.reranker import Reranker

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_random_checkpoint(
            Path(tmp) / "small-qwen3-vl", text_hidden=256, text_layers=4, text_heads=4,
            kv_heads=2, vision_hidden=128, vision_depth=2, vision_heads=4, vocab_size=16000,
            training_text=TEXT.read_text(encoding="utf-8").splitlines(),
        )
        spec = ModelSpec("embedder", str(ckpt), device="cpu")
        items = mixed_items(rng)
        ours = Embedder(spec)  # default batch_tokens (16384)
        lengths = [ours.encode(it).length for it in items]

        def one_padded_batch():  # the same encoding and forward code, all inputs in one batch
            return ours._forward([ours.encode(it) for it in items])

        t_ours, v_ours = timed(lambda: ours.embed(items), args.repeats)
        calls = ours.forward_calls
        t_naive, v_naive = timed(one_padded_batch, args.repeats)
        emb_diff = float(np.abs(v_ours - v_naive).max())
        ours_calls = calls // (args.repeats + 1)

        rspec = ModelSpec("reranker", str(ckpt), device="cpu")
        docs = rerank_documents(rng)
        query = "How do I extract the text of a PDF page with PyMuPDF?"
        batched = Reranker(rspec)
        # the reference: one whole pair per forward pass, no shared prefix
        single = Reranker(rspec, batch_tokens=1, share_prefix=False)
        r_lengths = [batched.encode(query, d).length for d in docs]
        t_batched, s_batched = timed(lambda: batched.score(query, docs), args.repeats)
        t_single, s_single = timed(lambda: single.score(query, docs), args.repeats)
        rr_diff = float(np.abs(np.array(s_batched) - np.array(s_single)).max())
        # Where the baseline's time goes: input preparation and the vision tower cost the same
        # however pairs are batched.
        t_encode, pairs = timed(lambda: [batched.encode(query, d) for d in docs], args.repeats)

        def vision():
            with torch.inference_mode():
                for p in pairs:
                    if p.pixel_values is not None:
                        batched._model.get_image_features(p.pixel_values, p.image_grid_thw)

        t_vision, _ = timed(vision, args.repeats)
        batched_calls = batched.forward_calls // (args.repeats + 1)

        # The same comparison on 20 short text documents (titles, captions, snippets), where
        # the shared query prefix is a large part of every pair.
        short_docs = [d for d in mixed_items(rng) if isinstance(d, str)][:40]
        short_docs = sorted(short_docs, key=len)[:20]
        short_b, short_s = Reranker(rspec), Reranker(rspec, batch_tokens=1, share_prefix=False)
        s_lengths = [short_b.encode(query, d).length for d in short_docs]
        t_short_b, ss_b = timed(lambda: short_b.score(query, short_docs), args.repeats)
        t_short_s, ss_s = timed(lambda: short_s.score(query, short_docs), args.repeats)
        short_diff = float(np.abs(np.array(ss_b) - np.array(ss_s)).max())
        short_calls = short_b.forward_calls // (args.repeats + 1)
        scaling = batch_scaling(short_b._model, args.repeats)

    results = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"torch {torch.__version__}",
        "embedder": {
            "inputs": len(items), "tokens_min": min(lengths), "tokens_max": max(lengths),
            "tokens_total": sum(lengths), "kbterm_s": t_ours, "one_batch_s": t_naive,
            "ratio": t_naive / t_ours, "kbterm_forward_passes": ours_calls,
            "max_abs_diff": emb_diff,
        },
        "reranker": {
            "documents": len(docs), "tokens_min": min(r_lengths), "tokens_max": max(r_lengths),
            "kbterm_s": t_batched, "one_pair_per_pass_s": t_single,
            "ratio": t_single / t_batched, "kbterm_forward_passes": batched_calls,
            "max_abs_diff": rr_diff, "encode_s": t_encode, "vision_tower_s": t_vision,
        },
        "reranker_short": {
            "documents": len(short_docs), "tokens_min": min(s_lengths),
            "tokens_max": max(s_lengths), "kbterm_s": t_short_b, "one_pair_per_pass_s": t_short_s,
            "ratio": t_short_s / t_short_b, "kbterm_forward_passes": short_calls,
            "max_abs_diff": short_diff,
        },
        "batch_scaling": [
            {"tokens": n, "one_row_s": a, "eight_rows_s": b, "speedup_of_batching": 8 * a / b}
            for n, a, b in scaling
        ],
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    e, r = results["embedder"], results["reranker"]
    print(f"Machine: {results['machine']}; medians of {args.repeats} runs after a warm-up.\n")
    print("| benchmark | set | baseline | kbterm | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    print(f"| embedder `embed()` | {e['inputs']} inputs, {e['tokens_min']}-{e['tokens_max']} "
          f"tokens ({e['tokens_total']} total; 24 short, 8 long texts, 4 images) | "
          f"one padded batch: {e['one_batch_s']:.2f} s | {e['kbterm_forward_passes']} "
          f"budgeted batches: {e['kbterm_s']:.2f} s | **{e['ratio']:.2f}x** | "
          f"{e['max_abs_diff']:.1e} |")
    print(f"| reranker `score()` | 1 query, {r['documents']} documents, {r['tokens_min']}-"
          f"{r['tokens_max']} tokens per pair (17 texts, 3 images) | one pair per pass: "
          f"{r['one_pair_per_pass_s']:.2f} s | {r['kbterm_forward_passes']} batched passes: "
          f"{r['kbterm_s']:.2f} s | **{r['ratio']:.2f}x** | {r['max_abs_diff']:.1e} |")
    print(f"| (reranker, mixed set) | where the baseline's time goes | input preparation "
          f"{r['encode_s']:.2f} s, vision tower {r['vision_tower_s']:.2f} s | | | |")
    r = results["reranker_short"]
    print(f"| reranker `score()` | 1 query, {r['documents']} short text documents, "
          f"{r['tokens_min']}-{r['tokens_max']} tokens per pair | one pair per pass: "
          f"{r['one_pair_per_pass_s']:.3f} s | {r['kbterm_forward_passes']} passes (shared prefix "
          f"+ batches): {r['kbterm_s']:.3f} s | **{r['ratio']:.2f}x** | "
          f"{r['max_abs_diff']:.1e} |")
    print("\nBatch scaling of one forward pass (8 identical rows vs 1 row, no padding):\n")
    print("| tokens per row | 1 row | 8 rows | 8 single passes / one 8-row pass |")
    print("|---|---|---|---|")
    for row in results["batch_scaling"]:
        print(f"| {row['tokens']} | {row['one_row_s'] * 1000:.1f} ms | "
              f"{row['eight_rows_s'] * 1000:.1f} ms | {row['speedup_of_batching']:.2f}x |")


if __name__ == "__main__":
    main()
