"""Qwen3-VL-2B-sized models on this CPU: float32 vs bfloat16 (issue #14), with kbterm's own
in-process code (``Embedder``, ``Reranker``, ``Generator`` with ``ModelSpec(role, path,
device="cpu", dtype=...)``).

The checkpoint has Qwen3-VL-2B's exact shapes with random weights (``from_config`` under a
fixed seed): text 28 layers x hidden 2048, MLP 6144, 16 attention heads / 8 KV heads, head dim
128, vocabulary 151,936, tied embeddings; vision 24 layers x hidden 1024, MLP 4096, 16 heads,
patch 16, merge 2, DeepStack from layers 5/11/17 (about 2.1 B parameters: 8.5 GB in float32,
stored in bfloat16 as the real checkpoints are, 4.3 GB).  ``build_random_checkpoint`` cannot set
the MLP sizes, the DeepStack layers or a vocabulary larger than its tokenizer, so the config is
built here; the tokenizer and processor come from ``build_random_checkpoint`` (a byte-level BPE
trained on the corpus's long text: 16,000 tokens asked, the trainer runs out of merges at about
2,700).  Token counts below are this tokenizer's: the passage is exactly 512 of its tokens.  The embedding rows past the
tokenizer's last id are zero (the LM head is tied to them), so that greedy decoding picks
tokens the tokenizer can print; every matrix keeps its full size, so the compute is that of
the real model.

Timed, for each dtype, in a fresh child process (its peak RSS is reported): a query embedding,
a passage of exactly 512 tokens of the tokenizer, one page image (an A4 page drawn at 150 dpi,
1240 x 1754, resized by the contract's limits to <= 1,843,200 pixels), reranking 20 short
passages for one query, and the first streamed piece of an answer (prompt: 4 evidence passages
of 256 tokens and a question).  One timed run of each after a warm-up on a small input of the
same kind (a full-size warm-up would double a long run); plus a raw matmul (512x2048 @
2048x6144, median of 5) for each dtype.

    python benchmarks/bench_2b_cpu.py                        # 40-50 minutes on 2 cores; ~15 GB peak
    python benchmarks/bench_2b_cpu.py --dtypes bfloat16      # one dtype
    python benchmarks/bench_2b_cpu.py --keep /tmp/q2b        # build once, keep the checkpoint
    python benchmarks/bench_2b_cpu.py --checkpoint /tmp/q2b  # reuse it (not deleted)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, corpus

QUERY = "How do I extract the text of a PDF page as Markdown with its tables?"
QUESTION = "How does kbterm render a PDF page to an image?"
PAGE_SIZE = (1240, 1754)  # A4 at 150 dpi


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the checkpoint


def build_2b(folder: Path, seed: int = 0) -> Path:
    """A random Qwen3-VL-2B-shaped checkpoint (weights in bfloat16) with kbterm's processor."""
    import torch
    from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from kbterm.models.random_checkpoint import build_random_checkpoint

    text = (corpus() / "text" / "handbook.txt").read_text(encoding="utf-8")
    # The processor and a 16k tokenizer; its tiny model files are replaced below.
    build_random_checkpoint(folder, vocab_size=16000, training_text=text.splitlines())
    for f in list(folder.glob("model*.safetensors*")) + [folder / "config.json",
                                                          folder / "generation_config.json"]:
        f.unlink(missing_ok=True)
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>",
            "<|vision_start|>", "<|vision_end|>")}
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, hidden_act="silu",
            max_position_embeddings=262144, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                             "mrope_section": [24, 20, 20], "mrope_interleaved": True},
            pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(
            depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, in_channels=3,
            hidden_act="gelu_pytorch_tanh", out_hidden_size=2048, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
            deepstack_visual_indexes=[5, 11, 17]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True)
    config.text_config.eos_token_id = ids["<|im_end|>"]
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight[len(tok):] = 0  # ids the tokenizer never prints
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    (folder / "bench_params.json").write_text(json.dumps({"parameters": params,
                                                          "tokenizer_vocab": len(tok)}))
    return folder


# --------------------------------------------------------------------------- inputs


def inputs(folder: Path, work: Path) -> dict:
    """The texts (cut to exact token counts of the checkpoint's tokenizer) and the page."""
    import numpy as np
    import pymupdf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    words = (corpus() / "text" / "handbook.txt").read_text(encoding="utf-8").split()
    rng = np.random.default_rng(0)

    def passage(tokens: int) -> str:
        start = int(rng.integers(0, len(words) - 4 * tokens))
        ids = tok(" ".join(words[start:start + 4 * tokens]), add_special_tokens=False)
        text = tok.decode(ids["input_ids"][:tokens])
        # decode/encode can merge differently at the cut: trim until it is exact
        while len(tok(text, add_special_tokens=False)["input_ids"]) > tokens:
            text = text[:-1]
        return text

    short = []
    for _ in range(20):
        start = int(rng.integers(0, len(words) - 80))
        short.append(" ".join(words[start:start + int(rng.integers(40, 70))]))
    doc = pymupdf.open(corpus() / "pdf" / "book.pdf")
    page = doc[0]
    zoom = min(PAGE_SIZE[0] / page.rect.width, PAGE_SIZE[1] / page.rect.height)
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
    from PIL import Image

    img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    canvas = Image.new("RGB", PAGE_SIZE, "white")
    canvas.paste(img, (0, 0))
    page_png = work / "page.png"
    canvas.save(page_png)
    small_png = work / "small.png"
    canvas.resize((256, 362)).save(small_png)
    return {"passage": passage(512), "evidence": [passage(256) for _ in range(4)],
            "short": short, "page": str(page_png), "small": str(small_png),
            "tokens": lambda s: len(tok(s, add_special_tokens=False)["input_ids"])}


# --------------------------------------------------------------------------- one dtype


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def run_dtype(folder: Path, dtype: str, work: Path, repeats: int = 1) -> dict:
    import numpy as np
    import torch

    from kbterm.backends.base import Evidence
    from kbterm.config import DEFAULT_QUERY_INSTRUCTION
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder
    from kbterm.models.generator import Generator
    from kbterm.models.reranker import Reranker

    data = inputs(folder, work)
    out: dict = {"dtype": dtype, "threads": torch.get_num_threads()}

    # The product the model's MLP runs (nn.Linear: x @ w.T), 512 rows.
    x = torch.randn(512, 2048).to(getattr(torch, dtype))
    w = torch.randn(6144, 2048).to(getattr(torch, dtype))
    with torch.inference_mode():
        torch.nn.functional.linear(x, w)
        times = [timed(lambda: torch.nn.functional.linear(x, w))[0] for _ in range(5)]
    out["matmul_gflops"] = 2 * 512 * 2048 * 6144 / statistics.median(times) / 1e9
    log(f"{dtype}: linear {out['matmul_gflops']:.0f} GFLOP/s")

    emb = Embedder(ModelSpec("embedder", str(folder), device="cpu", dtype=dtype))
    out["load_embedder_s"], _ = timed(emb.load)
    log(f"{dtype}: embedder loaded in {out['load_embedder_s']:.1f} s")
    emb.embed(["warm up"], DEFAULT_QUERY_INSTRUCTION)
    emb.embed([Path(data["small"])])
    log(f"{dtype}: warmed up")
    out["query_tokens"] = emb.encode(QUERY, DEFAULT_QUERY_INSTRUCTION).length
    out["query_s"], vq = timed(lambda: emb.embed([QUERY], DEFAULT_QUERY_INSTRUCTION), repeats)
    log(f"{dtype}: query {out['query_s']:.2f} s")
    out["passage_text_tokens"] = data["tokens"](data["passage"])
    out["passage_tokens"] = emb.encode(data["passage"]).length
    out["passage_s"], vp = timed(lambda: emb.embed([data["passage"]]), repeats)
    log(f"{dtype}: 512-token passage {out['passage_s']:.2f} s")
    enc = emb.encode(Path(data["page"]))
    t, h, w = (int(x) for x in enc.image_grid_thw[0])
    out["page_pixels"] = [w * 16, h * 16]
    out["page_visual_tokens"] = t * h * w // 4
    out["page_tokens"] = enc.length
    out["page_s"], vi = timed(lambda: emb.embed([Path(data["page"])]), repeats)
    log(f"{dtype}: page image {out['page_s']:.1f} s")
    out["vectors"] = {"query": vq[0].tolist(), "passage": vp[0].tolist(), "page": vi[0].tolist()}
    emb.release()

    rr = Reranker(ModelSpec("reranker", str(folder), device="cpu", dtype=dtype))
    out["load_reranker_s"], _ = timed(rr.load)
    rr.score(QUERY, data["short"][:2])
    lengths = [rr.encode(QUERY, d).length for d in data["short"]]
    out["rerank_pair_tokens"] = [min(lengths), max(lengths), sum(lengths)]
    calls = rr.forward_calls
    out["rerank_s"], scores = timed(lambda: rr.score(QUERY, data["short"]), repeats)
    out["rerank_passes"] = (rr.forward_calls - calls) // repeats
    out["scores"] = list(scores)
    log(f"{dtype}: rerank 20 {out['rerank_s']:.1f} s")
    rr.release()

    gen = Generator(ModelSpec("generator", str(folder), device="cpu", dtype=dtype),
                    max_new_tokens=24)
    out["load_generator_s"], _ = timed(gen.load)
    stamps: list[float] = []
    hook = gen._model.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))
    evidence = [Evidence(i + 1, f"handbook.txt, part {i + 1}", text=p)
                for i, p in enumerate(data["evidence"])]

    def first_piece(question: str, ev: list) -> tuple[float, float, int, str]:
        stamps.clear()
        start = time.perf_counter()
        stream = gen.stream(question, ev)
        piece = next(iter(stream), "")
        got = time.perf_counter()
        n = len(stamps)
        stream.close()
        return got - start, (stamps[0] - start) if stamps else float("nan"), n, piece

    first_piece("warm up?", evidence[:1])
    log(f"{dtype}: generator warmed up")
    out["prompt_tokens"] = int(gen._inputs(gen.messages(QUESTION, evidence))["input_ids"].shape[1])
    runs = [first_piece(QUESTION, evidence) for _ in range(repeats)]
    out["first_piece_s"] = statistics.median(r[0] for r in runs)
    out["first_token_s"] = statistics.median(r[1] for r in runs)
    out["tokens_to_first_piece"], out["first_piece"] = runs[-1][2], runs[-1][3]
    log(f"{dtype}: first token {out['first_token_s']:.1f} s, first piece "
        f"{out['first_piece_s']:.1f} s ({out['tokens_to_first_piece']} tokens)")
    hook.remove()
    gen.release()
    with open("/proc/self/status") as fh:
        out["peak_rss"] = next(int(line.split()[1]) * 1024 for line in fh
                               if line.startswith("VmHWM:"))
    out["vectors"] = {k: np.asarray(v).tolist() for k, v in out["vectors"].items()}
    return out


# --------------------------------------------------------------------------- report


def cosine(a: list[float], b: list[float]) -> float:
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def report(results: dict, meta: dict) -> None:
    dtypes = list(results)
    r0 = results[dtypes[0]]
    print(f"\nCPU: {meta['cpu']}; native bf16 flag: {meta['native_bf16'] or 'none'}; "
          f"kbterm's dtype = \"auto\" picks {meta['auto_dtype']} here.")
    print(f"\nMeasured {meta['date']}, torch {meta['torch']}, transformers "
          f"{meta['transformers']}, {r0['threads']} torch threads; checkpoint "
          f"{meta['parameters'] / 1e9:.2f} B parameters, tokenizer of {meta['tokenizer_vocab']} "
          f"tokens (model vocabulary 151,936).  {meta['repeats']} timed run(s) of each "
          "(median) after a warm-up.\n")
    rows = [
        ("nn.Linear alone (the MLP's product)", "matmul_gflops",
         lambda r: "512 rows x 2048 -> 6144",
         lambda v: f"{v:.0f} GFLOP/s"),
        ("load the embedder", "load_embedder_s", lambda r: "", None),
        ("query embedding", "query_s", lambda r: f"{r['query_tokens']} tokens", None),
        ("passage embedding", "passage_s",
         lambda r: f"{r['passage_text_tokens']} text tokens ({r['passage_tokens']} with the "
                   "template)", None),
        ("page image embedding", "page_s",
         lambda r: f"{PAGE_SIZE[0]}x{PAGE_SIZE[1]} page -> {r['page_pixels'][0]}x"
                   f"{r['page_pixels'][1]}, {r['page_visual_tokens']} visual tokens "
                   f"({r['page_tokens']} in all)", None),
        ("load the reranker", "load_reranker_s", lambda r: "", None),
        ("rerank 20 short passages", "rerank_s",
         lambda r: f"{r['rerank_pair_tokens'][0]}-{r['rerank_pair_tokens'][1]} tokens a pair "
                   f"({r['rerank_pair_tokens'][2]} in all), {r['rerank_passes']} passes", None),
        ("load the generator", "load_generator_s", lambda r: "", None),
        ("answer: first token (prefill)", "first_token_s",
         lambda r: f"prompt {r['prompt_tokens']} tokens", None),
        ("answer: first streamed piece", "first_piece_s",
         lambda r: f"after {r['tokens_to_first_piece']} tokens", None),
        ("peak RSS of the process", "peak_rss", lambda r: "one model loaded at a time",
         lambda v: f"{v / 2**30:.1f} GiB"),
    ]
    head = " | ".join(dtypes)
    print(f"| | input | {head} | bfloat16 / float32 |")
    print("|---|---|" + "---:|" * len(dtypes) + "---:|")
    for label, key, what, fmt in rows:
        cells = []
        for d in dtypes:
            v = results[d][key]
            cells.append(fmt(v) if fmt else f"{v:.2f} s")
        ratio = ""
        if "float32" in results and "bfloat16" in results:
            a, b = results["float32"][key], results["bfloat16"][key]
            ratio = f"{b / a:.2f}x" if a else ""
            if key == "matmul_gflops":
                ratio = f"{b / a:.2f}x (rate)"
        print(f"| {label} | {what(results[dtypes[0]])} | {' | '.join(cells)} | {ratio} |")
    if "float32" in results and "bfloat16" in results:
        f, b = results["float32"], results["bfloat16"]
        cos = {k: cosine(f["vectors"][k], b["vectors"][k]) for k in f["vectors"]}
        diff = max(abs(x - y) for x, y in zip(f["scores"], b["scores"]))
        print("\nfloat32 vs bfloat16 outputs (random weights): embedding cosine "
              + ", ".join(f"{k} {v:.4f}" for k, v in cos.items())
              + f"; rerank scores max abs diff {diff:.4f}")
        print(f"first pieces: float32 {f['first_piece']!r}, bfloat16 {b['first_piece']!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs of each input (median); 1 by default, given the cost")
    parser.add_argument("--checkpoint", help="reuse this checkpoint folder (kept)")
    parser.add_argument("--keep", help="build the checkpoint into this folder and keep it")
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # one dtype, in a fresh process
        with tempfile.TemporaryDirectory() as tmp:
            result = run_dtype(Path(args.checkpoint), args.child, Path(tmp), args.repeats)
        print("BENCH-RESULT " + json.dumps(result))
        return

    import torch
    import transformers

    started = time.perf_counter()
    tmp = None
    if args.checkpoint:
        folder = Path(args.checkpoint)
    else:
        folder = Path(args.keep) if args.keep else \
            Path(tempfile.mkdtemp(prefix="kbterm-bench-2b-")) / "qwen3-vl-2b-random"
        tmp = None if args.keep else folder.parent
        log(f"building the checkpoint in {folder}")
        build_2b(folder)
        log(f"built in {time.perf_counter() - started:.0f} s")
    try:
        meta = json.loads((folder / "bench_params.json").read_text())
        from kbterm.models.runtime import choose_runtime, cpu_native_bf16

        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                    if l.startswith("model name")), platform.processor())
        meta.update(cpu=f"{cpu}, {os.cpu_count()} cores", native_bf16=cpu_native_bf16(),
                    auto_dtype=choose_runtime("cpu", "auto").dtype)
        meta.update(repeats=args.repeats, date=time.strftime("%Y-%m-%d"), torch=torch.__version__.split("+")[0],
                    transformers=transformers.__version__, python=platform.python_version(),
                    load=os.getloadavg())
        results = {}
        for dtype in args.dtypes:
            log(f"--- {dtype}")
            proc = subprocess.run([sys.executable, __file__, "--child", dtype, "--checkpoint",
                                   str(folder), "--repeats", str(args.repeats)],
                                  stdout=subprocess.PIPE, text=True, cwd=REPO,
                                  env=dict(os.environ, HF_HUB_OFFLINE="1"), check=True)
            line = next(l for l in proc.stdout.splitlines() if l.startswith("BENCH-RESULT "))
            results[dtype] = json.loads(line.split(" ", 1)[1])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    meta["seconds"] = time.perf_counter() - started
    meta["load_after"] = os.getloadavg()
    report(results, meta)
    print(f"\ntotal {meta['seconds'] / 60:.1f} min; load average before "
          f"{meta['load'][0]:.2f}, after {meta['load_after'][0]:.2f}")
    if args.json:
        for r in results.values():
            r.pop("vectors", None)
        print(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
