"""Watcher benchmarks (``kbterm watch``).  Every figure is compared with a baseline measured in
the same run on the same machine.  The watcher is the real command (``kbterm --config C watch
FOLDER --log-file LOG``) in a subprocess with the default ``[watch]`` settings and the tiny random
Qwen3-VL checkpoint; the script reads its published state (``watcher.json``) and the index the
way any reader does.

(a) Save-to-searchable latency: 50 edits of 20 small text files, each with a unique token, timed
    from the end of the write until a reader sees a chunk with the token; p50 and p95 (target:
    p50 <= 1 s; the debounce setting is the floor).  Baseline: what a user does without the
    watcher, ``kbterm index FILE`` (a subprocess, Python and model start-up included) after each
    of 10 edits, timed the same way.
(b) A 1,000-file burst (100 files per subfolder) written as fast as possible into a watched
    folder: seconds from the first write until the watcher is quiet (every file in the ledger as
    "indexed", state "idle", queue 0), LanceDB commits (table version deltas) and watcher batches.
    Baseline: a naive per-event writer, ``Indexer.sync`` of one path at a time in one session
    (in-process, model loaded, files already on disk), over the same 1,000 files.
(c) Idle CPU of the watcher after (b) (1,001 files watched), as % of one core over
    --idle-seconds, vs watchdog's ``PollingObserver(timeout=1.0)`` with a no-op handler on the same
    folder for the same time.  Needs (b)'s watcher: ``--only c`` runs (b) too.
(d) Memory: a fresh watcher, its idle RSS (model loaded by one small edit) vs its peak RSS
    (VmRSS sampled every 50 ms) during a --burst-files burst (100 subfolders); seconds until
    quiet, commits, batches.  (b) samples RSS the same way, for a second point.

Before each burst the watcher indexes one warm-up file (so the model is loaded) and the script
waits keep_versions_seconds + 2 s, so the watcher's deferred table clean-up has run.

    python benchmarks/bench_watch.py                   # all four
    python benchmarks/bench_watch.py --only a --edits 20
    python benchmarks/bench_watch.py --only d --burst-files 2000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import kbterm_env, model_config, write_config  # noqa: E402

POLL = 0.005  # visibility polling interval (a)
STATE_POLL = 0.05  # watcher-state polling interval
RSS_EVERY = 0.05
SETTLE_EXTRA = 2.0  # after keep_versions_seconds, so the watcher's deferred optimize has run

WORDS = ("harbour lamp keeper tide fog ledger signal north beacon rope anchor gull storm "
         "chart compass lantern reef cove pier lighthouse ferry buoy wind harbourmaster dawn "
         "dusk cargo salt crew mast hull deck").split()


def note_text(i: int) -> str:
    """A few short sentences, distinct per ``i``."""
    rng = random.Random(i)
    words = [rng.choice(WORDS) for _ in range(12)]
    return (f"Note {i}: the {words[0]} and the {words[1]} at {i % 24}:{i % 60:02d}. "
            f"{' '.join(words[2:7]).capitalize()}. {' '.join(words[7:]).capitalize()}.\n")


def burst_paths(folder: Path, n: int) -> list[Path]:
    return [folder / f"d{i // 100:03d}" / f"note-{i:05d}.txt" for i in range(n)]


def write_files(paths: list[Path], offset: int = 0) -> None:
    made = set()
    for i, p in enumerate(paths):
        if p.parent not in made:
            p.parent.mkdir(parents=True, exist_ok=True)
            made.add(p.parent)
        with open(p, "w", encoding="utf-8") as fh:
            fh.write(note_text(offset + i))


def percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def versions(store) -> int:
    """chunks + files table versions (each commit adds one)."""
    total = 0
    for table in (store.chunks_table, store.files_table):
        if table is not None:
            total += table.version
    return total


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """VmRSS of ``pid`` every RSS_EVERY seconds, in a thread, as (perf_counter, KiB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), proc_rss_kib(self.pid)))
            except OSError:
                return
            self._stop.wait(RSS_EVERY)

    def between(self, t0: float, t1: float) -> list[int]:
        return [kib for t, kib in self.samples if t0 <= t <= t1]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class WatchProc:
    """``kbterm --config C watch FOLDER --log-file LOG`` in a subprocess."""

    def __init__(self, config: Path, data: Path, folder: Path, log: Path) -> None:
        self.data, self.log = data, log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kbterm", "--config", str(config), "watch", str(folder),
             "--log-file", str(log)],
            stdin=subprocess.DEVNULL, stdout=open(log.with_suffix(".out"), "wb"),
            stderr=subprocess.STDOUT, env=kbterm_env(), cwd=REPO,
        )
        self.pid = self.proc.pid
        RUNNING.append(self)

    def state(self):
        from kbterm.watchstate import read_state

        self.check()
        return read_state(self.data)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"kbterm watch (pid {self.pid}) exited with code "
                               f"{self.proc.returncode}; log tail:\n{self.tail()}")

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.state()
            if s is not None and s.pid == self.pid and s.last_sweep_at > 0:
                return
            time.sleep(STATE_POLL)
        raise RuntimeError(f"no start sweep within {timeout} s; log tail:\n{self.tail()}")

    def wait_quiet(self, reader, paths: list[str], timeout: float) -> float:
        """perf_counter when every path is indexed and the watcher is idle with an empty queue."""
        deadline = time.monotonic() + timeout
        want = set(paths)
        while time.monotonic() < deadline:
            s = self.state()
            if s is not None and s.state == "idle" and s.queue == 0:
                t = time.perf_counter()
                ledger = reader.ledger()
                if all(p in ledger and ledger[p].status == "indexed" for p in want):
                    return t
            time.sleep(STATE_POLL)
        ledger = reader.ledger()
        missing = [p for p in want if p not in ledger or ledger[p].status != "indexed"]
        raise RuntimeError(f"not quiet within {timeout} s ({len(missing)} of {len(want)} not "
                           f"indexed, state {self.state()}); log tail:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        text = ""
        for path in (self.log, self.log.with_suffix(".out")):
            try:
                text += "".join(path.read_text(errors="replace").splitlines(True)[-n:])
            except OSError:
                pass
        return text

    def problems(self) -> list[str]:
        """WARNING / ERROR lines of the log (and anything on stdout/stderr)."""
        lines = []
        try:
            lines += [ln for ln in self.log.read_text(errors="replace").splitlines()
                      if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln]
        except OSError:
            pass
        try:
            lines += [f"[out] {ln}" for ln in
                      self.log.with_suffix(".out").read_text(errors="replace").splitlines()
                      if ln.strip()]
        except OSError:
            pass
        return lines

    def stop(self) -> dict:
        """SIGTERM and wait; returns exit code, seconds to exit, log problems."""
        t = time.perf_counter()
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        if self in RUNNING:
            RUNNING.remove(self)
        problems = self.problems()
        return {"exit_code": code, "stop_s": time.perf_counter() - t,
                "log_problems": len(problems), "log_problem_lines": problems[:20]}


RUNNING: list[WatchProc] = []


def settle_seconds() -> float:
    from kbterm.config import IndexingConfig

    return IndexingConfig().keep_versions_seconds + SETTLE_EXTRA


def warm_up(w: WatchProc, reader, path: Path, timeout: float = 120) -> None:
    """One small file indexed, so the model is loaded; then wait out the deferred optimize."""
    path.write_text("Warm-up note: the lamp is lit.\n")
    w.wait_quiet(reader, [os.path.realpath(path)], timeout)
    time.sleep(settle_seconds())
    w.wait_quiet(reader, [os.path.realpath(path)], timeout)


# --------------------------------------------------------------------------- (a)


def visible(reader, path: str, token: str) -> bool:
    from kbterm.store import sql_str

    try:
        rows = reader.live_chunks(["path", "text"], where=f"path = {sql_str(path)}")
    except Exception:  # noqa: BLE001 - a version cleaned up under us: try again
        return False
    return any(token in (r["text"] or "") for r in rows)


def edit(path: Path, i: int, token: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"Edit {i} of {path.stem}. The keeper wrote {token} in the log at dawn. "
                 "The fog lifted by noon.\n")


def wait_visible(reader, path: str, token: str, t0: float, timeout: float = 60) -> float:
    while not visible(reader, path, token):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{token} not visible in {path} after {timeout} s")
        time.sleep(POLL)
    return time.perf_counter() - t0


def bench_latency(work: Path, model: Path, edits: int, baseline_edits: int) -> dict:
    from kbterm.config import WatchConfig
    from kbterm.store import Store

    folder, base_folder = work / "lat", work / "lat-base"
    for f in (folder, base_folder):
        f.mkdir()
        for k in range(20):
            (f / f"note-{k:02d}.txt").write_text(note_text(k))

    # Baseline: kbterm index FILE after each edit (no watcher).
    config2 = write_config(work / "a-base.toml", model, work / "data-a-base")
    subprocess.run([sys.executable, "-m", "kbterm", "--config", str(config2), "index",
                    str(base_folder)], capture_output=True, env=kbterm_env(), cwd=REPO, check=True)
    reader2 = Store(work / "data-a-base")
    base = []
    for i in range(baseline_edits):
        path = base_folder / f"note-{i % 20:02d}.txt"
        token = f"base{i}marker"
        edit(path, i, token)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kbterm", "--config", str(config2), "index",
                        str(path)], capture_output=True, env=kbterm_env(), cwd=REPO, check=True)
        base.append(wait_visible(reader2, os.path.realpath(path), token, t0))
        time.sleep(0.3)

    # The watcher.
    data = work / "data-a"
    config = write_config(work / "a.toml", model, data)
    w = WatchProc(config, data, folder, work / "a.log")
    try:
        w.wait_ready()
        reader = Store(data)
        w.wait_quiet(reader, [os.path.realpath(p) for p in folder.iterdir()], 120)
        before = w.state()
        v0 = versions(reader)
        lat = []
        for i in range(edits):
            path = folder / f"note-{i % 20:02d}.txt"
            token = f"edit{i}marker"
            edit(path, i, token)
            t0 = time.perf_counter()
            lat.append(wait_visible(reader, os.path.realpath(path), token, t0))
            time.sleep(0.3)
            deadline = time.monotonic() + 10  # the ledger commit after the chunks
            while time.monotonic() < deadline:
                s = w.state()
                if s.state == "idle" and s.queue == 0:
                    break
                time.sleep(STATE_POLL)
        after = w.state()
        commits = versions(reader) - v0
    finally:
        stopped = w.stop()
    p50, b50 = statistics.median(lat), statistics.median(base)
    return {
        "edits": edits, "debounce_seconds": WatchConfig().debounce_seconds,
        "batch_seconds": WatchConfig().batch_seconds,
        "watcher_p50_s": p50, "watcher_p95_s": percentile(lat, 95),
        "watcher_min_s": min(lat), "watcher_max_s": max(lat),
        "watcher_batches": after.batches - before.batches,
        "watcher_files_done": after.files_done - before.files_done,
        "watcher_commits": commits,
        "baseline_edits": baseline_edits, "baseline_p50_s": b50,
        "baseline_p95_s": percentile(base, 95),
        "ratio_p50": p50 / b50, "target_p50_s": 1.0, "target_met": p50 <= 1.0,
        "watcher_latencies_s": [round(x, 4) for x in lat],
        "baseline_latencies_s": [round(x, 4) for x in base],
        "watcher_stop": stopped,
    }


# --------------------------------------------------------------------------- (b), (d)


def naive_baseline(work: Path, model: Path, files: int) -> dict:
    """Per-event writer: one Indexer.sync per file, in one session, model loaded."""
    from kbterm.config import config_from_dict
    from kbterm.indexer import Indexer
    from kbterm.models.registry import get_embedder

    folder = work / "burst-naive"
    folder.mkdir()
    warm = folder / "warm.txt"
    warm.write_text("Warm-up note: the lamp is lit.\n")
    paths = burst_paths(folder, files)
    write_files(paths)
    config = config_from_dict(model_config(model, work / "data-naive"))
    ix = Indexer(config, embedder=get_embedder(config))
    roots = ix.roots([folder])
    with ix.session():
        ix.sync(roots, [os.path.realpath(warm)], optimize=False)  # loads the model
        v0 = versions(ix.store)
        t = time.perf_counter()
        indexed = 0
        for p in paths:
            indexed += ix.sync(roots, [os.path.realpath(p)], optimize=False).indexed
        seconds = time.perf_counter() - t
        commits = versions(ix.store) - v0
    assert indexed == files, indexed
    return {"files": files, "seconds": seconds, "commits": commits, "syncs": files}


def watcher_burst(work: Path, model: Path, files: int, name: str) -> tuple[dict, WatchProc]:
    """A watcher on an empty folder, warm-up file, then a burst of ``files``; returns the figures
    and the (idle, still running) watcher."""
    from kbterm.store import Store

    folder = work / name
    folder.mkdir()
    data = work / f"data-{name}"
    config = write_config(work / f"{name}.toml", model, data)
    w = WatchProc(config, data, folder, work / f"{name}.log")
    sampler = None
    try:
        w.wait_ready()
        sampler = RssSampler(w.pid)
        reader = Store(data)
        start_rss = proc_rss_kib(w.pid)
        warm_up(w, reader, folder / "warm.txt")
        t_idle = time.perf_counter()
        time.sleep(2.0)
        idle_rss = statistics.median(sampler.between(t_idle, time.perf_counter()))
        before = w.state()
        v0 = versions(reader)
        paths = burst_paths(folder, files)
        t0 = time.perf_counter()
        write_files(paths)
        written = time.perf_counter() - t0
        quiet = w.wait_quiet(reader, [os.path.realpath(p) for p in paths],
                             timeout=max(300, 0.5 * files))
        seconds = quiet - t0
        commits = versions(reader) - v0
        after = w.state()
        peak = max(sampler.between(t0, quiet + 0.2))
        time.sleep(settle_seconds())
        settled = time.perf_counter()
        after_rss = statistics.median(sampler.between(settled - 2.0, settled))
        after_settle = w.state()
    except BaseException:
        if sampler:
            sampler.stop()
        w.stop()
        raise
    sampler.stop()
    result = {
        "files": files, "write_s": written, "seconds_to_quiet": seconds,
        "commits": commits, "batches": after.batches - before.batches,
        "files_done": after.files_done - before.files_done,
        "sweeps_during_burst": int(after.last_sweep_at != before.last_sweep_at),
        "notice": after.notice, "last_error": after.last_error,
        "rss_start_sweep_mib": start_rss / 1024, "rss_idle_mib": idle_rss / 1024,
        "rss_peak_mib": peak / 1024, "rss_peak_over_idle": peak / idle_rss,
        "rss_after_burst_settled_mib": after_rss / 1024,
        "commits_after_settle": versions(reader) - v0,
        "batches_after_settle": after_settle.batches - before.batches,
    }
    return result, w


# --------------------------------------------------------------------------- (c)


POLLING_SCRIPT = """
import sys, time
from watchdog.events import FileSystemEventHandler
from watchdog.observers.polling import PollingObserver
observer = PollingObserver(timeout=1.0)
observer.schedule(FileSystemEventHandler(), sys.argv[1], recursive=True)
observer.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def cpu_over(pid: int, seconds: float) -> tuple[float, float]:
    c0, t0 = proc_cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = proc_cpu_seconds(pid), time.perf_counter()
    return c1 - c0, t1 - t0


def bench_idle(w: WatchProc, folder: Path, seconds: float) -> dict:
    s0 = w.state()
    cpu, wall = cpu_over(w.pid, seconds)
    s1 = w.state()
    poller = subprocess.Popen([sys.executable, "-c", POLLING_SCRIPT, str(folder)],
                              stdout=subprocess.PIPE, env=kbterm_env(), cwd=REPO)
    try:
        assert poller.stdout.readline().strip() == b"ready"
        time.sleep(3.0)  # its first snapshot of the folder
        pcpu, pwall = cpu_over(poller.pid, seconds)
    finally:
        poller.terminate()
        poller.wait(timeout=10)
    files = sum(len(f) for _r, _d, f in os.walk(folder))
    watcher_pct, polling_pct = 100 * cpu / wall, 100 * pcpu / pwall
    return {
        "files_watched": files, "seconds": wall,
        "watcher_cpu_s": cpu, "watcher_cpu_pct": watcher_pct,
        "watcher_state": s1.state, "watcher_batches_during": s1.batches - s0.batches,
        "watcher_sweeps_during": int(s1.last_sweep_at != s0.last_sweep_at),
        "watcher_models_loaded": s1.models_loaded,
        "polling_cpu_s": pcpu, "polling_cpu_pct": polling_pct, "polling_seconds": pwall,
        "ratio": watcher_pct / polling_pct if polling_pct else None,
        "clk_tck": os.sysconf("SC_CLK_TCK"),
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["a", "b", "c", "d"], action="append")
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--baseline-edits", type=int, default=10)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--burst-files", type=int, default=10000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    only = set(args.only or ["a", "b", "c", "d"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    from kbterm.models.random_checkpoint import build_random_checkpoint

    report: dict = {}
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="kbterm-bench-watch-"))
    try:
        model = build_random_checkpoint(work / "model")
        if "a" in only:
            report["latency"] = r = bench_latency(work, model, args.edits, args.baseline_edits)
            print(f"(a) save-to-searchable over {r['edits']} edits (debounce "
                  f"{r['debounce_seconds']:g} s): watcher p50 {r['watcher_p50_s']:.3f} s, p95 "
                  f"{r['watcher_p95_s']:.3f} s (target p50 <= 1 s: "
                  f"{'met' if r['target_met'] else 'NOT met'}); kbterm index FILE p50 "
                  f"{r['baseline_p50_s']:.3f} s over {r['baseline_edits']} edits; ratio "
                  f"{r['ratio_p50']:.3f}; {r['watcher_batches']} batches, "
                  f"{r['watcher_commits']} commits", flush=True)
        if only & {"b", "c"}:
            report["burst_naive"] = n = naive_baseline(work, model, args.files)
            print(f"(b) baseline: naive per-event writer, {n['files']} files: "
                  f"{n['seconds']:.1f} s, {n['commits']} commits", flush=True)
            r, w = watcher_burst(work, model, args.files, "burst")
            try:
                r["ratio_commits"] = r["commits"] / n["commits"]
                r["ratio_seconds"] = r["seconds_to_quiet"] / n["seconds"]
                report["burst"] = r
                print(f"(b) watcher, {r['files']} files written in {r['write_s']:.2f} s: quiet "
                      f"after {r['seconds_to_quiet']:.1f} s, {r['commits']} commits, "
                      f"{r['batches']} batches; ratios vs naive: commits "
                      f"{r['ratio_commits']:.4f}, seconds {r['ratio_seconds']:.3f}; RSS idle "
                      f"{r['rss_idle_mib']:.0f} MiB, peak {r['rss_peak_mib']:.0f} MiB "
                      f"({r['rss_peak_over_idle']:.2f}x)", flush=True)
                if "c" in only:
                    report["idle_cpu"] = c = bench_idle(w, w.data.parent / "burst",
                                                        args.idle_seconds)
                    ratio = f"{c['ratio']:.3f}" if c["ratio"] is not None else "n/a"
                    print(f"(c) idle CPU over {c['seconds']:.0f} s, {c['files_watched']} files: "
                          f"watcher {c['watcher_cpu_pct']:.3f} % of a core "
                          f"({c['watcher_cpu_s']:.2f} s), PollingObserver(1 s) "
                          f"{c['polling_cpu_pct']:.3f} % ({c['polling_cpu_s']:.2f} s); "
                          f"ratio {ratio}", flush=True)
            finally:
                report.setdefault("burst", r)["watcher_stop"] = w.stop()
        if "d" in only:
            r, w = watcher_burst(work, model, args.burst_files, "big")
            r["watcher_stop"] = w.stop()
            report["memory"] = r
            print(f"(d) {r['files']}-file burst: RSS idle {r['rss_idle_mib']:.0f} MiB, peak "
                  f"{r['rss_peak_mib']:.0f} MiB ({r['rss_peak_over_idle']:.2f}x), after "
                  f"{r['rss_after_burst_settled_mib']:.0f} MiB; quiet after "
                  f"{r['seconds_to_quiet']:.1f} s, {r['commits']} commits, {r['batches']} "
                  f"batches", flush=True)
            b = report.get("burst")
            if b:
                print(f"(d) second point, {b['files']} files ((b)): RSS idle "
                      f"{b['rss_idle_mib']:.0f} MiB, peak {b['rss_peak_mib']:.0f} MiB "
                      f"({b['rss_peak_over_idle']:.2f}x)", flush=True)
    finally:
        for w in list(RUNNING):
            print(f"stopping watcher {w.pid}; log tail:\n{w.tail()}", file=sys.stderr)
            w.stop()
        shutil.rmtree(work, ignore_errors=True)
    report["total_seconds"] = time.perf_counter() - started
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
