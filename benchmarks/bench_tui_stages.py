"""TUI keystroke -> first list on screen with a Qwen3-VL-2B-shaped embedder on this CPU (issue
#15): the keyword stage (no model call) vs the fused stage (the query embedded by the 2B model).

The app is driven by Textual's Pilot, as in bench_tui.py (b): the query box is cleared, a query
is typed at once, and the time runs from the last keystroke to the keyword list on screen and
to the fused list on screen (the 200 ms debounce is in both).  Every query is new to the app
(no query-vector cache hit).  Reranking is off (``search.rerank = 0``): the subject is the first
two stages; the reranker's own cost is in BENCHMARKS.md's 2B table.

The checkpoint is ``bench_2b_cpu.py``'s random one with Qwen3-VL-2B's exact shapes (built into
``--checkpoint`` if that folder holds none), loaded by kbterm's real ``Embedder`` in float32 (what
``dtype = "auto"`` picks on a CPU without native bfloat16).  The index holds ``--chunks`` text
chunks cut by that checkpoint's tokenizer; their vectors are **random** unit vectors of the
model's dimension (2048), written through the real ``Indexer``: embedding 2,000 chunks with a
2B model on 2 cores would take about a day, and a stored vector's value does not change what a
query costs.

    python benchmarks/bench_tui_stages.py --checkpoint /tmp/q2b         # about 10 minutes
    python benchmarks/bench_tui_stages.py --checkpoint /tmp/q2b --queries 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import model_config  # noqa: E402

WORDS = ("harbour lamp keeper tide fog ledger signal north beacon rope anchor gull storm chart "
         "compass lantern reef cove pier ferry buoy wind dawn dusk cargo salt crew mast hull "
         "deck").split()
QUERIES = ["harbour lamp", "north beacon", "rope anchor", "storm chart", "reef cove",
           "ferry buoy", "dawn cargo", "mast hull deck"]


class RandomDocumentVectors:
    """The index-time embedder: the checkpoint's tokenizer (so chunks are cut as kbterm cuts
    them) and random unit vectors of the model's dimension for the documents."""

    def __init__(self, folder: Path, dimension: int) -> None:
        from kbterm.backends.tokenizer import folder_tokenizer
        from kbterm.models.encoding import VisionLimits

        self._tokenizer = folder_tokenizer(folder)
        self.dimension = dimension
        self.limits = VisionLimits()
        self.calls = 0
        self.loaded = False
        self._rng = np.random.default_rng(0)

    def tokenizer(self):
        return self._tokenizer

    def embed(self, items, *args, **kwargs) -> np.ndarray:
        self.calls += 1
        v = self._rng.standard_normal((len(items), self.dimension)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def release(self) -> bool:
        return False


def build_index(work: Path, model: Path, chunks: int):
    from kbterm.config import config_from_dict
    from kbterm.indexer import Indexer

    folder = work / "notes"
    for i in range(chunks):
        sub = folder / f"d{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        text = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(24))
        (sub / f"n{i:05d}.txt").write_text(f"Note {i}: {text}.\n")
    config = config_from_dict(model_config(model, work / "data", library={"folders": [str(folder)]},
                                           search={"rerank": 0}))
    dimension = json.loads((model / "config.json").read_text())["text_config"]["hidden_size"]
    Indexer(config, embedder=RandomDocumentVectors(model, dimension)).run()
    return config


async def stages(config, queries: list[str]) -> dict:
    from kbterm.retrieval import Searcher
    from kbterm.tui.app import KbtermApp

    searcher = Searcher(config)
    t = time.perf_counter()
    searcher.search("warm up", k=20)  # the model loaded and the vector cache built
    warm_s = time.perf_counter() - t
    app = KbtermApp(config, searcher=searcher)
    keyword, fused, embed = [], [], []
    async with app.run_test(size=(100, 30)) as pilot:
        for q in queries:
            await pilot.press("ctrl+a", "ctrl+k")  # clear the box
            await pilot.pause(0.5)
            await pilot.press(*q)
            t = time.perf_counter()
            seen_keyword = None
            while time.perf_counter() - t < 600:
                await asyncio.sleep(0.002)
                results = app.results
                if results is None or results.query != q or not app.shown_items():
                    continue
                if results.stage == "keywords" and seen_keyword is None:
                    seen_keyword = time.perf_counter() - t
                elif results.stage != "keywords":
                    fused.append(time.perf_counter() - t)
                    embed.append(results.timings_ms.get("embed", float("nan")) / 1000)
                    break
            keyword.append(seen_keyword if seen_keyword is not None else float("nan"))
    return {"keyword_stage_s": statistics.median(keyword),
            "fused_stage_s": statistics.median(fused),
            "query_embedding_s": statistics.median(embed), "keyword_each_s": keyword,
            "fused_each_s": fused, "chunks": searcher.chunk_count, "queries": len(queries),
            "warm_up_s": warm_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="the 2B-shaped checkpoint's folder (built there if missing)")
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (args.checkpoint / "config.json").is_file():
        from bench_2b_cpu import build_2b

        build_2b(args.checkpoint)
    import torch

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="kbterm-bench-stages-"))
    try:
        config = build_index(work, args.checkpoint, args.chunks)
        r = asyncio.run(stages(config, QUERIES[: args.queries]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r["ratio"] = r["fused_stage_s"] / r["keyword_stage_s"]
    print(f"| stage | last keystroke -> list on screen (median of {r['queries']} queries) |")
    print("|---|---|")
    print(f"| keyword (BM25, no model call) | **{1000 * r['keyword_stage_s']:.0f} ms** |")
    print(f"| fused (query embedded by the 2B-shaped model, vector + keyword) | "
          f"{r['fused_stage_s']:.1f} s (of which the embedding {r['query_embedding_s']:.1f} s) |")
    print(f"\nThe keyword list comes {r['ratio']:.0f}x sooner; {r['chunks']:,} chunks.")
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
