"""Identical content embedded once (issue #13): indexing a PDF of 2,000 identical pages with
kbterm's reuse (one vector per distinct chunk key) vs the same run with every chunk embedded
(the baseline), same process, same tiny random checkpoint, same machine.

    python benchmarks/bench_reuse.py               # 2,000 pages, about 2 minutes
    python benchmarks/bench_reuse.py --pages 500
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import model_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    args = parser.parse_args()
    os.environ.pop("KBTERM_DATA_DIR", None)
    import pymupdf

    from kbterm.config import config_from_dict
    from kbterm.indexer import Indexer
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder
    from kbterm.models.encoding import VisionLimits
    from kbterm.models.random_checkpoint import build_random_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_random_checkpoint(root / "model")
        # Small page images, as in the test suite: the code path is the contract's.
        embedder = Embedder(ModelSpec("embedder", str(model), device="cpu", dtype="float32"),
                            limits=VisionLimits(image_max_pixels=16 * 32 * 32))
        embedder.load()
        folder = root / "docs"
        folder.mkdir()
        doc = pymupdf.open()
        for _ in range(args.pages):
            doc.new_page(width=300, height=200).insert_text(
                (36, 72), "The terms and conditions, the same on every page.")
        doc.save(folder / "same.pdf")

        def run(name: str, reuse: bool) -> tuple[float, int, int]:
            config = config_from_dict(model_config(model, root / f"data-{name}",
                                                   indexing={"keep_versions_seconds": 0}))
            indexer = Indexer(config, embedder=embedder)
            if not reuse:  # every chunk embedded: what kbterm did before
                indexer._embed = indexer._embed_fresh  # type: ignore[method-assign]
            calls = embedder.forward_calls
            start = time.perf_counter()
            summary = indexer.run([folder])
            return time.perf_counter() - start, summary.embedded, embedder.forward_calls - calls

        base = run("baseline", reuse=False)
        new = run("reuse", reuse=True)
    print(f"| {args.pages} identical pages | seconds | chunks embedded | forward passes |")
    print("|---|---:|---:|---:|")
    print(f"| every chunk embedded (baseline) | {base[0]:.1f} | {base[1]} | {base[2]} |")
    print(f"| kbterm: identical chunks reuse one vector | {new[0]:.1f} | {new[1]} | {new[2]} |")
    print(f"\nratio: {base[0] / new[0]:.1f}x faster, {base[1] / max(1, new[1]):.0f}x fewer "
          "embeddings")


if __name__ == "__main__":
    main()
