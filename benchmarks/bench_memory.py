"""Peak memory of reading one hostile or large input (issue #12): each input is parsed by
kbterm's own parser in a fresh child process, and its peak RSS is compared with an idle child
that imported the same modules and parsed nothing (the baseline, measured in the same run).

Inputs, all generated here:
- ``float-17000.tif``: 17,000 x 17,000 float32 grey, 1.2 MB on disk (1.2 GB decoded): refused
- ``grey16-17000.png``: 17,000 x 17,000 16-bit grey PNG (578 MB decoded): read in bands; also
  measured with the whole-picture conversion kbterm used before, for comparison
- ``photo-16320x12240.jpg``: a 200-megapixel photo (JPEG draft decoding)
- ``rgba-8000.png``: 8,000 x 8,000 RGBA with transparency
- ``poster.pdf``: one 14,400 x 14,400 pt page (PDF's largest)
- ``clip-1080p.mp4``: 10 s of 1920 x 1080 video

    python benchmarks/bench_memory.py            # about 2 minutes, ~9 GB peak (the old path)
    python benchmarks/bench_memory.py --no-old   # skip the old conversion (~1.5 GB peak)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
from kbterm.ingest import ParseContext, ParseError, parse
kind, path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
outcome = "idle"
if mode == "parse":
    try:
        n = sum(1 for _ in parse(Path(path), kind, ParseContext()))
        outcome = f"{n} sections"
    except ParseError as exc:
        outcome = "refused: " + str(exc)[:70]
elif mode == "old":  # the whole-picture conversion kbterm used before
    Image.MAX_IMAGE_PIXELS = None
    img = Image.open(path); img.load()
    a = np.asarray(img, dtype=np.float64)
    grey = Image.fromarray(np.clip(a * (255.0 / 65535.0) + 0.5, 0, 255).astype(np.uint8))
    del a
    grey.convert("RGB").resize((1344, 1344), Image.Resampling.BICUBIC)
    outcome = "converted whole"
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork and exec).
with open("/proc/self/status") as fh:
    peak = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
print(json.dumps({"peak": peak, "seconds": time.perf_counter() - start, "outcome": outcome}))
"""


def make_inputs(folder: Path) -> list[tuple[str, str, Path]]:
    import numpy as np
    import pymupdf
    from PIL import Image

    from test_image_memory import huge_float_tiff

    inputs = [("image", "float32 grey 17000^2 TIFF", huge_float_tiff(folder / "f.tif",
                                                                       17_000, 17_000))]
    grey = folder / "grey16-17000.png"
    a = np.zeros((17_000, 17_000), np.uint16)
    a[::97, :] = 40_000
    Image.fromarray(a).save(grey, compress_level=1)
    del a
    inputs.append(("image", "16-bit grey 17000^2 PNG", grey))
    photo = folder / "photo.jpg"
    rng = np.random.default_rng(0)
    tile = Image.fromarray((rng.random((1530, 2040, 3)) * 255).astype(np.uint8))
    big = Image.new("RGB", (16_320, 12_240))
    for y in range(0, 12_240, 1530):
        for x in range(0, 16_320, 2040):
            big.paste(tile, (x, y))
    big.save(photo, quality=85)
    del big
    inputs.append(("image", "200 MP JPEG photo", photo))
    rgba = folder / "rgba.png"
    im = Image.new("RGBA", (8000, 8000), (200, 10, 10, 0))
    im.paste((10, 200, 10, 255), (1000, 1000, 7000, 7000))
    im.save(rgba, compress_level=1)
    del im
    inputs.append(("image", "RGBA 8000^2 PNG", rgba))
    pdf = folder / "poster.pdf"
    doc = pymupdf.open()
    page = doc.new_page(width=14_400, height=14_400)
    page.insert_text((72, 1000), "A very large poster", fontsize=900)
    doc.save(pdf)
    inputs.append(("pdf", "14400 pt PDF page", pdf))
    video = folder / "clip.mp4"
    import av

    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                rate=25)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for i in range(250):
            frame = np.full((1080, 1920, 3), (i * 7) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    inputs.append(("video", "10 s 1080p video", video))
    return inputs


def child(kind: str, path: Path, mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), mode],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-old", action="store_true", help="skip the old conversion")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        inputs = make_inputs(Path(tmp))
        print(f"inputs made in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        idle = child("image", inputs[0][2], "idle")["peak"]
        print(f"| input | on disk | peak RSS | over idle | ratio to idle | time | outcome |")
        print("|---|---:|---:|---:|---:|---:|---|")
        print(f"| idle process (baseline) | | {idle / 2**20:.0f} MiB | | 1.00 | | |")
        runs = [(k, name, p, "parse") for k, name, p in inputs]
        if not args.no_old:
            runs.insert(2, ("image", "16-bit grey 17000^2 PNG, old whole conversion",
                            inputs[1][2], "old"))
        for kind, name, path, mode in runs:
            r = child(kind, path, mode)
            print(f"| {name} | {path.stat().st_size / 2**20:.1f} MiB | "
                  f"{r['peak'] / 2**20:.0f} MiB | {(r['peak'] - idle) / 2**20:.0f} MiB | "
                  f"{r['peak'] / idle:.2f} | {r['seconds']:.1f} s | {r['outcome']} |")


if __name__ == "__main__":
    main()
