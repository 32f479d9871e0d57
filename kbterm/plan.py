"""``kbterm index --plan``: what a run would embed, and about how long that takes here.

The plan walks the folders as a run does and, for every file a run would index (new, changed,
or indexed with other settings) and every file whose pictures are pending, counts what would be
embedded: text passages (cut by the embedder's tokenizer, as the run cuts them; a passage
whose vector the index already holds is reused, not counted), PDF page images, photos and video
segments, with their tokens.  It writes nothing: it reads the files ledger, never takes the
writer lock, and works while a watcher writes.

The time is estimated from rates measured on the embedding backend (in process or a server)
once per host and kept in ``latency.json`` (:mod:`kbterm.backends.latency`): seconds per text
token and per visual token, measured by embedding a probe passage and a probe picture, plus the
costs the plan measures itself (reading the text, drawing a sample page, decoding a sample of
video) and a fixed cost per file and per run.  A file that was only touched (same bytes) or
renamed is counted as if it changed: the plan errs on the side of more work.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from kbterm.ingest import PICTURE_TYPES, ParseContext, ParseError, parse
from kbterm.scan import scan
from kbterm.store import STATUS_INDEXED

if TYPE_CHECKING:
    from kbterm.indexer import Indexer

# What a run costs beyond embedding and reading, measured on the tiny checkpoint on a 2-core
# machine (benchmarks/bench_plan.py): committing a file's rows and ledger row; and a
# `kbterm index` process's own start and end (Python and kbterm's imports, LanceDB, the lock
# and checks, the keyword index, compaction, exit), about 3.5 s there.
PER_FILE_SECONDS = 0.02
PER_RUN_SECONDS = 3.5
# Pages drawn, photos decoded and video seconds decoded to measure their cost, at most.
SAMPLES = 3


@dataclass
class Work:
    """What a run would embed."""

    files: int = 0  # files to index (text and pictures)
    pending: int = 0  # files whose text is in and whose pictures are still to embed
    unchanged: int = 0
    passages: int = 0
    text_tokens: int = 0
    reused: int = 0  # passages whose vectors the index holds already
    pages: int = 0
    page_tokens: int = 0
    page_pixels: int = 0  # pixels drawn in all (the drawing cost)
    photos: int = 0
    photo_tokens: int = 0
    photo_pixels: int = 0
    segments: int = 0
    segment_tokens: int = 0
    video_frames: int = 0
    unreadable: list[str] = field(default_factory=list)  # files the plan could not read

    @property
    def embeddings(self) -> int:
        return self.passages + self.pages + self.photos + self.segments

    @property
    def visual_tokens(self) -> int:
        return self.page_tokens + self.photo_tokens + self.segment_tokens


@dataclass
class Rates:
    """Seconds per unit on this machine and host."""

    text_token: float
    visual_token: float
    host: str = ""
    read_text: float = 0.0  # the plan's own time reading and cutting the text (measured)
    draw_pixel: float = 0.0  # drawing a PDF page, per pixel (measured on sample pages)
    photo_pixel: float = 0.0  # decoding and resizing a photo, per output pixel
    video_frame: float = 0.0  # decoding a video frame (measured on a sample segment)
    load: float = 0.0  # loading the model, when it is not loaded yet


@dataclass
class Estimate:
    text_seconds: float
    picture_seconds: float

    @property
    def seconds(self) -> float:
        return self.text_seconds + self.picture_seconds


def estimate(work: Work, rates: Rates, page_tokens: int | None = None,
             page_pixels: int | None = None) -> Estimate:
    """The time of a run doing ``work`` at ``rates``; ``page_tokens``/``page_pixels``: the
    same pages at another resolution."""
    tokens = work.page_tokens if page_tokens is None else page_tokens
    pixels = work.page_pixels if page_pixels is None else page_pixels
    text = (rates.load + PER_RUN_SECONDS + rates.read_text + work.files * PER_FILE_SECONDS
            + work.text_tokens * rates.text_token)
    pictures = ((tokens + work.photo_tokens + work.segment_tokens) * rates.visual_token
                + pixels * rates.draw_pixel + work.photo_pixels * rates.photo_pixel
                + work.video_frames * rates.video_frame
                + (work.files + work.pending) * PER_FILE_SECONDS * (work.visual_tokens > 0))
    return Estimate(text, pictures)


def visual_tokens(width: int, height: int) -> int:
    """Merged visual tokens of a picture the model's preprocessing sized (sides of 32 px)."""
    return max(1, width // 32) * max(1, height // 32)


class Planner:
    """Counts the work of a run of ``indexer`` over ``roots`` (nothing is written)."""

    def __init__(self, indexer: "Indexer", progress: Callable[[str, int, int, str], None]
                 | None = None, quick: bool = False) -> None:
        self.indexer = indexer
        # quick: text from file sizes (about 4 bytes a token), not read; pictures as always
        self.quick = quick
        self.progress = progress or (lambda phase, done, total, current: None)
        self.rates = Rates(0.0, 0.0)
        self._keys: set[str] = set()
        self._samples: dict[str, list[tuple[float, float]]] = {}  # kind -> (seconds, units)
        self._pages: list[tuple[float, float]] = []  # every page's box in points

    def pages_at(self, max_pixels: int) -> tuple[int, int]:
        """(visual tokens, pixels drawn) of the same pages at ``max_pixels``."""
        from kbterm.ingest.pdf import page_size

        tokens = drawn = 0
        for width, height in self._pages:
            w, h = page_size(width, height, max_pixels)
            tokens, drawn = tokens + visual_tokens(w, h), drawn + w * h
        return tokens, drawn

    def count(self, roots: list[str]) -> Work:
        ix = self.indexer
        cfg = ix.config.indexing
        work = Work()
        result = scan(roots, cfg.ignore, str(ix.config.data_path))
        ledger = ix.store.ledger() if ix.store.exists else {}
        settings = {kind: ix.settings(kind) for kind in {f.file_type for f in result.found}}
        todo = []
        for f in result.found:
            old = ledger.get(f.path)
            if f.size == 0:
                continue
            unchanged = old is not None and ix._unchanged(f, old, settings[f.file_type], False)
            if unchanged and not (old.pictures and old.status == STATUS_INDEXED):
                work.unchanged += 1
            elif unchanged:
                work.pending += 1
                todo.append((f, "pictures"))
            else:
                work.files += 1
                todo.append((f, ""))
        started = time.perf_counter()
        for n, (f, only) in enumerate(todo):
            self.progress("plan", n, len(todo), f.path)
            try:
                if only != "pictures":
                    self._quick_text(f, work) if self.quick else self._text(f, work)
                if f.file_type in PICTURE_TYPES:
                    self._pictures(f, work)
            except (ParseError, OSError, ValueError) as exc:
                work.unreadable.append(f"{f.path}: {exc}")
        self.progress("plan", len(todo), len(todo), "")
        picture_time = sum(s for samples in self._samples.values() for s, _u in samples)
        self.rates.read_text = time.perf_counter() - started - picture_time
        for kind, attr in (("page", "draw_pixel"), ("photo", "photo_pixel"),
                           ("frame", "video_frame")):
            samples = self._samples.get(kind)
            if samples:
                setattr(self.rates, attr, sum(s for s, _ in samples) / sum(u for _, u in samples))
        return work

    # ------------------------------------------------------------------ text

    def _text(self, f: Any, work: Work) -> None:
        from kbterm.indexer import _key

        ix = self.indexer
        ctx = ParseContext(limits=ix.limits(f.file_type), stage="text",
                           video_segment_seconds=ix.config.indexing.video_segment_seconds)
        keys = []
        for section in parse(Path(f.path), f.file_type, ctx):
            if section.kind != "text":
                continue
            chunk_cfg = ix._chunk_config(f.file_type)
            for chunk in ix.chunker.split(section.text, chunk_cfg.size, chunk_cfg.overlap,
                                          section.line_start):
                key = _key("text", chunk.text)
                if key in self._keys:
                    continue  # the same passage twice in this run: embedded once
                self._keys.add(key)
                keys.append((key, chunk.tokens))
        known = ix.store.known_keys([k for k, _ in keys]) if keys and ix.store.exists else set()
        for key, tokens in keys:
            if key in known:
                work.reused += 1
            else:
                work.passages += 1
                work.text_tokens += tokens

    def _quick_text(self, f: Any, work: Work) -> None:
        if f.file_type in ("image", "video"):
            return
        size = self.indexer._chunk_config(f.file_type)
        tokens = f.size // (40 if f.file_type == "pdf" else 4)  # (a PDF is mostly not text)
        work.text_tokens += tokens
        work.passages += max(1, math.ceil(tokens / max(1, size.size - size.overlap)))

    # ------------------------------------------------------------------ pictures

    def _sample(self, kind: str, run: Callable[[], float]) -> None:
        """Time ``run`` (returning its units: pixels, frames) while fewer than SAMPLES are in."""
        samples = self._samples.setdefault(kind, [])
        if len(samples) < SAMPLES:
            start = time.perf_counter()
            units = run()
            samples.append((time.perf_counter() - start, units))

    def _pictures(self, f: Any, work: Work) -> None:
        limits = self.indexer.limits(f.file_type)
        if f.file_type == "pdf":
            self._pdf(f.path, limits, work)
        elif f.file_type == "image":
            self._photo(f.path, limits, work)
        elif f.file_type == "video":
            self._video(f.path, limits, work)

    def _pdf(self, path: str, limits: Any, work: Work) -> None:
        import pymupdf

        from kbterm.ingest.pdf import _draw, _draws_nothing, _open, _pixmap_image, page_size

        doc = _open(Path(path))
        try:
            for index in range(doc.page_count):
                try:
                    page = doc.load_page(index)
                    if _draws_nothing(page):
                        continue
                    w, h = page_size(page.rect.width, page.rect.height,
                                     limits.image_max_pixels, limits.image_min_pixels)
                except Exception:  # noqa: BLE001 - the run reports a page it cannot load
                    continue
                self._pages.append((page.rect.width, page.rect.height))
                work.pages += 1
                work.page_tokens += visual_tokens(w, h)
                work.page_pixels += w * h

                def draw(page: Any = page) -> float:  # drawn and converted, as the run does
                    image, _ = _pixmap_image(_draw(page, limits.image_max_pixels,
                                                   limits.image_min_pixels))
                    return float(image.size[0] * image.size[1])

                self._sample("page", draw)
        finally:
            doc.close()
            pymupdf.TOOLS.reset_mupdf_warnings()

    def _photo(self, path: str, limits: Any, work: Work) -> None:
        from PIL import Image

        from kbterm.ingest.image import load_image, smart_resize

        with Image.open(path) as img:
            width, height = img.size
        h, w = smart_resize(height, width, 32, limits.image_min_pixels, limits.image_max_pixels)
        work.photos += 1
        work.photo_tokens += visual_tokens(w, h)
        work.photo_pixels += w * h

        def decode() -> float:
            image = load_image(Path(path), ParseContext(limits=limits))
            return float(image.size[0] * image.size[1])

        self._sample("photo", decode)

    def _video(self, path: str, limits: Any, work: Work) -> None:
        import av

        from kbterm.ingest.video import frame_size, header_duration

        duration = header_duration(Path(path))
        with av.open(path) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
        if not duration or not width:
            raise ParseError("the video's header gives no duration or size")
        seconds = self.indexer.config.indexing.video_segment_seconds
        fw, fh = frame_size(width, height, limits.frame_max_pixels)
        for n in range(math.ceil(duration / seconds)):
            length = min(seconds, duration - n * seconds)
            frames = min(limits.max_frames, max(1, math.ceil(length * limits.fps)))
            frames += frames % 2  # frames go in pairs (the temporal patch)
            pixels = min(fw * fh, limits.total_pixels // frames)
            scale = math.sqrt(pixels / (fw * fh))
            work.segments += 1
            work.segment_tokens += frames // 2 * visual_tokens(int(fw * scale), int(fh * scale))
            work.video_frames += frames
        self._sample("frame", lambda: self._decode_sample(path, limits))

    def _decode_sample(self, path: str, limits: Any) -> float:
        """Decode the first segment as the indexer does; its frame count."""
        ctx = ParseContext(limits=limits,
                           video_segment_seconds=self.indexer.config.indexing.video_segment_seconds)
        for section in parse(Path(path), "video", ctx):
            return float(len(section.frames or []) or 1)
        return 1.0


def plan_dict(work: Work, rates: Rates, est: Estimate) -> dict[str, Any]:
    out = asdict(work)
    out.update(embeddings=work.embeddings, visual_tokens=work.visual_tokens,
               rates=asdict(rates), seconds=est.seconds, text_seconds=est.text_seconds,
               picture_seconds=est.picture_seconds)
    return out


def rates_key(config: Any, backend: Any) -> str:
    """The embedding host as the config and the backend name it, without loading anything."""
    e, m = config.models.embedder, config.models
    return "|".join((type(backend).__name__, str(getattr(backend, "url", "") or e.url), e.model,
                     e.device or m.device, e.dtype or m.dtype))


def measured_rates(indexer: "Indexer", measure: bool = True) -> Rates | None:
    """The embedding rates of ``indexer``'s embedder (kept ones; else measured now when
    ``measure``), with the host's description."""
    from kbterm.backends.latency import rates

    backend = indexer.embedder
    found = rates(indexer.config.data_path, backend, rates_key(indexer.config, backend), measure)
    if found is None:
        return None
    loaded = getattr(backend, "loaded", True)
    host = backend.host().describe() if loaded or measure else ""
    # A model in this process is loaded again by the run's own process; a server's is warm.
    in_process = type(backend).__module__.startswith("kbterm.models")
    return Rates(found["text_token"], found["visual_token"], host=host,
                 load=found.get("load", 0.0) if in_process else 0.0)


def duration(seconds: float) -> str:
    """"about 40 s", "about 12 min", "about 9 h 10 min", "about 3 days"."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} min"
    if seconds < 2 * 86400:
        h, rest = divmod(round(seconds / 60), 60)
        return f"about {h} h {rest} min" if rest else f"about {h} h"
    return f"about {seconds / 86400:.1f} days"


def render(planner: Planner, work: Work, rates: Rates) -> str:
    from kbterm.resolution import CONTRACT_MAX_PIXELS, describe

    est = estimate(work, rates)
    pixels = planner.indexer.picture_pixels("pdf")
    lines = [f"to index   {work.files:,} files ({work.unchanged:,} unchanged"
             + (f", {work.pending:,} with pictures pending)" if work.pending else ")")]
    if work.passages or work.reused:
        lines.append(f"  text     {work.passages:,} passages, {work.text_tokens:,} tokens"
                     + (f" ({work.reused:,} more already embedded)" if work.reused else ""))
    if work.pages:
        lines.append(f"  pages    {work.pages:,} page images, {work.page_tokens:,} visual tokens, "
                     f"at {describe(pixels)}")
    if work.photos:
        lines.append(f"  photos   {work.photos:,}, {work.photo_tokens:,} visual tokens")
    if work.segments:
        lines.append(f"  video    {work.segments:,} segments, {work.segment_tokens:,} visual "
                     "tokens")
    for problem in work.unreadable[:5]:
        lines.append(f"  (cannot read {problem})")
    host = rates.host or "the embedding model"
    lines.append(f"time       {duration(est.seconds)} on {host}: the text "
                 f"{duration(est.text_seconds)} (searchable first), the pictures "
                 f"{duration(est.picture_seconds)}")
    if work.pages:
        for other in sorted({CONTRACT_MAX_PIXELS, pixels // 2} - {pixels}, reverse=True):
            tokens, drawn = planner.pages_at(other)
            alt = estimate(work, rates, page_tokens=tokens, page_pixels=drawn)
            lines.append(f"           pages at {describe(other)}: {duration(alt.seconds)} "
                         "(indexing.page_max_pixels)")
    if "cpu" in host and est.seconds > 600:
        lines.append("           a GPU would take minutes: run kbterm serve on a GPU machine, "
                     "or a vLLM server (README: Where models run)")
    return "\n".join(lines)


# A run is large (its first lines say what it will do) past either of these.
LARGE_FILES = 100
LARGE_SECONDS = 60.0


def run_header(indexer: "Indexer", roots: list[str]) -> list[str]:
    """The first lines of a large run: what it will embed (text counted from file sizes) and,
    when the host's rates are known, about how long it takes; [] for a small run."""
    planner = Planner(indexer, quick=True)
    work = planner.count(roots)
    rates = measured_rates(indexer, measure=False)
    est = None
    if rates is not None:
        rates.draw_pixel, rates.photo_pixel = planner.rates.draw_pixel, planner.rates.photo_pixel
        rates.video_frame = planner.rates.video_frame
        est = estimate(work, rates)
    if work.files + work.pending < LARGE_FILES and (est is None or est.seconds < LARGE_SECONDS):
        return []
    parts = [f"about {work.passages:,} passages"]
    for n, what in ((work.pages, "page images"), (work.photos, "photos"),
                    (work.segments, "video segments")):
        if n:
            parts.append(f"{n:,} {what}")
    lines = [f"plan: {work.files + work.pending:,} files to index: {', '.join(parts)}"]
    if est is not None:
        lines.append(f"      {duration(est.seconds)} on {rates.host or 'this host'} (the text "
                     f"first: {duration(est.text_seconds)}); details: kbterm index --plan")
    else:
        lines.append("      how long: kbterm index --plan (measures this host once)")
    return lines


def time_left(config: Any) -> str:
    """For ``kbterm status`` while pictures are pending: about how long the work still to do
    under the configured folders takes ("" when the host's rates are not known yet)."""
    from kbterm.indexer import Indexer

    indexer = Indexer(config)
    rates = measured_rates(indexer, measure=False)
    if rates is None:
        return ""
    planner = Planner(indexer, quick=True)
    work = planner.count(indexer.roots())
    rates.draw_pixel, rates.photo_pixel = planner.rates.draw_pixel, planner.rates.photo_pixel
    rates.video_frame = planner.rates.video_frame
    est = estimate(work, rates)
    return f"{duration(est.seconds)} of indexing left on {rates.host or 'this host'}"
