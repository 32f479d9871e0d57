"""TUI benchmarks (issue #6), with the tiny random Qwen3-VL checkpoint.

(a) Time to first frame: a fresh Python process imports the app and runs it headless until its
    first screen is mounted (Python start-up included), vs the baseline of the same process
    running ``kbterm --help`` (start-up and the CLI's imports only).  Target <= 1 s.
(b) Keystroke-to-results latency on an index of --chunks text chunks (default 10,000): the app
    driven by Textual's Pilot, a query typed at once, timed from the last keystroke to the
    fused results on screen and to the reranked list; the debounce (200 ms) is included.
    Baseline: the same query through ``Searcher.search`` directly (no UI, no debounce).

    python benchmarks/bench_tui.py
    python benchmarks/bench_tui.py --chunks 2000 --queries 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import kbterm_env, model_config  # noqa: E402

FIRST_FRAME = r"""
import sys, time
t0 = time.perf_counter()
from kbterm.config import config_from_dict
from kbterm.tui.app import KbtermApp, image_widget
config = config_from_dict({"data_dir": sys.argv[1]})
image_widget(config.tui.images)  # as kbterm.tui.app.run does before the app starts
class Timed(KbtermApp):
    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(self.done)
    def done(self):
        print(time.perf_counter() - t0)
        self.exit()
Timed(config).run(headless=True, size=(100, 30))
"""


def first_frame(data: Path, repeats: int) -> dict:
    env = kbterm_env()
    frames, helps = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", FIRST_FRAME, str(data)], check=True, env=env,
                       cwd=REPO, capture_output=True, timeout=120)
        frames.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kbterm", "--help"], check=True, env=env,
                       cwd=REPO, capture_output=True, timeout=120)
        helps.append(time.perf_counter() - t)
    return {"first_frame_s": statistics.median(frames), "help_s": statistics.median(helps),
            "ratio": statistics.median(frames) / statistics.median(helps)}


def build_index(work: Path, chunks: int):
    from kbterm.config import config_from_dict
    from kbterm.indexer import Indexer
    from kbterm.models.random_checkpoint import build_random_checkpoint

    model = build_random_checkpoint(work / "model")
    folder = work / "notes"
    words = ("harbour lamp keeper tide fog ledger signal north beacon rope anchor gull storm "
             "chart compass lantern reef cove pier ferry buoy wind dawn dusk cargo salt crew "
             "mast hull deck").split()
    for i in range(chunks):
        sub = folder / f"d{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        text = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(24))
        (sub / f"n{i:05d}.txt").write_text(f"Note {i}: {text}.\n")
    config = config_from_dict(model_config(model, work / "data",
                                           library={"folders": [str(folder)]}))
    t = time.perf_counter()
    summary = Indexer(config).run()
    return config, summary, time.perf_counter() - t


async def keystrokes(config, queries: list[str]) -> dict:
    from kbterm.retrieval import Searcher
    from kbterm.tui.app import KbtermApp

    searcher = Searcher(config)
    searcher.search("warm up", k=20)  # models loaded, cache built: as after the app warms
    app = KbtermApp(config, searcher=searcher)
    fast, reranked, direct = [], [], []
    async with app.run_test(size=(100, 30)) as pilot:
        for q in queries:
            await pilot.press("ctrl+a", "ctrl+k")  # clear the box (Input: home, delete right)
            await pilot.pause(0.5)
            await pilot.press(*q)
            t = time.perf_counter()
            seen_fast = None
            while time.perf_counter() - t < 60:
                await asyncio.sleep(0.002)
                items = app.shown_items()
                if app.results is not None and app.results.query == q and items:
                    if seen_fast is None:
                        seen_fast = time.perf_counter() - t
                    if any(i.reranked for i in items):
                        reranked.append(time.perf_counter() - t)
                        break
            fast.append(seen_fast or float("nan"))
            s = time.perf_counter()
            searcher.search(q, k=20)
            direct.append(time.perf_counter() - s)
    return {"to_results_ms": 1000 * statistics.median(fast),
            "to_reranked_ms": 1000 * statistics.median(reranked),
            "searcher_direct_ms": 1000 * statistics.median(direct),
            "chunks": searcher.chunk_count, "queries": len(queries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="kbterm-bench-tui-"))
    report = {}
    try:
        config, summary, seconds = build_index(work, args.chunks)
        report["first_frame"] = r = first_frame(config.data_path, args.repeats)
        print(f"(a) first frame {r['first_frame_s']:.2f} s (kbterm --help {r['help_s']:.2f} s;"
              f" ratio {r['ratio']:.2f})", flush=True)
        queries = ["harbour lamp", "north beacon", "rope anchor", "storm chart", "reef cove",
                   "ferry buoy", "dawn cargo", "mast hull deck"][: args.queries]
        report["keystrokes"] = r = asyncio.run(keystrokes(config, queries))
        r["index_seconds"] = seconds
        print(f"(b) {r['chunks']:,} chunks: last keystroke -> results {r['to_results_ms']:.0f} ms,"
              f" -> reranked {r['to_reranked_ms']:.0f} ms (debounce 200 ms included); "
              f"Searcher.search alone {r['searcher_direct_ms']:.0f} ms", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
