"""``search`` through MCP vs ``kbterm search --json`` (issue #17), same index, same model host.

The tiny random checkpoint hosted by a ``kbterm serve`` started here (so no side loads a model
per call), an index of --notes notes.  Timed, each a median over --queries different queries
(no reranking; the reranker's own cost is the same on every path):

* ``kbterm search --json``: a fresh process per query, as a script runs it;
* ``search`` through an MCP stdio session (the SDK's client and a ``kbterm mcp`` subprocess),
  warm: after one first call;
* the same ``Searcher.search`` in this process, warm (no protocol): the floor.

    python benchmarks/bench_mcp.py
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

from common import REPO, kbterm_env

WORDS = ("harbour lamp keeper tide fog ledger signal north beacon rope anchor gull storm chart "
         "compass lantern reef cove pier ferry buoy wind dawn dusk cargo salt crew").split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=300)
    parser.add_argument("--queries", type=int, default=9)
    args = parser.parse_args()
    from kbterm.config import load_config
    from kbterm.models.random_checkpoint import build_random_checkpoint

    work = Path(tempfile.mkdtemp(prefix="kbterm-bench-mcp-"))
    env = kbterm_env()
    serve = None
    try:
        model = build_random_checkpoint(work / "model")
        folder = work / "notes"
        folder.mkdir()
        for i in range(args.notes):
            text = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(40))
            (folder / f"n{i:04d}.md").write_text(f"# Note {i}\n\n{text}.\n")
        config = work / "c.toml"
        config.write_text(
            f'data_dir = "{work / "data"}"\n[library]\nfolders = ["{folder}"]\n'
            '[models]\ndevice = "cpu"\ndtype = "float32"\n'
            + "".join(f'[models.{r}]\nmodel = "{model}"\n' for r in ("embedder", "reranker",
                                                                       "generator"))
            + '[serve]\nport = 8479\nroles = ["embedder"]\n')
        base = [sys.executable, "-m", "kbterm", "--config", str(config)]
        serve = subprocess.Popen(base + ["serve"], env=env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):  # until the serve has published its address
            if (work / "data" / "serve.json").exists():
                break
            time.sleep(0.2)
        time.sleep(1.0)
        subprocess.run(base + ["index", "--no-progress"], env=env, cwd=REPO, check=True,
                       capture_output=True)
        queries = [f"{WORDS[i]} {WORDS[(i * 5 + 3) % len(WORDS)]}" for i in range(args.queries + 1)]

        cli = []
        for q in queries[1:]:
            t = time.perf_counter()
            subprocess.run(base + ["search", "--json", "--no-rerank", q], env=env, cwd=REPO,
                           check=True, capture_output=True)
            cli.append(time.perf_counter() - t)

        async def mcp_calls() -> list[float]:
            from mcp import ClientSession, StdioServerParameters
            from mcp.client.stdio import stdio_client

            params = StdioServerParameters(command=sys.executable, args=base[1:] + ["mcp"],
                                           env=env, cwd=str(REPO))
            times = []
            with open(os.devnull, "w") as errlog:
                async with stdio_client(params, errlog=errlog) as (r, w):
                    async with ClientSession(r, w) as s:
                        await s.initialize()
                        await s.call_tool("search", {"query": queries[0], "rerank": False})
                        for q in queries[1:]:
                            t = time.perf_counter()
                            res = await s.call_tool("search", {"query": q, "rerank": False})
                            times.append(time.perf_counter() - t)
                            assert not res.is_error, res.content
            return times

        mcp = asyncio.run(mcp_calls())
        os.environ.update(env)
        from kbterm.retrieval import Searcher

        searcher = Searcher(load_config(config), read_only=True)
        searcher.search(queries[0], k=10, rerank=False)
        direct = []
        for q in queries[1:]:
            t = time.perf_counter()
            searcher.search(q, k=10, rerank=False)
            direct.append(time.perf_counter() - t)
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    r = {"cli_s": statistics.median(cli), "mcp_s": statistics.median(mcp),
         "direct_s": statistics.median(direct), "notes": args.notes, "queries": args.queries}
    print("| path | one search (median) | / in-process floor |")
    print("|---|---|---|")
    for name, key in (("`kbterm search --json`, a process per query", "cli_s"),
                      ("`search` through a warm MCP stdio session", "mcp_s"),
                      ("`Searcher.search` in a warm process (no protocol)", "direct_s")):
        print(f"| {name} | {1000 * r[key]:.0f} ms | {r[key] / r['direct_s']:.1f}x |")
    print(f"\nMCP vs the CLI: {r['cli_s'] / r['mcp_s']:.1f}x faster; protocol overhead "
          f"{1000 * (r['mcp_s'] - r['direct_s']):.0f} ms a call")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
