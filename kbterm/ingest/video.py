"""Video files: segments of ``ctx.video_segment_seconds``, each as frames sampled at the contract's
fps (1 per second, at most ``max_frames`` a segment).

Sample times are ``start, start + 1/fps, ...`` up to the segment's end; a segment that would hold
more than ``max_frames`` is thinned by evenly spaced indices (the contract's rule).  Frames are
scaled down while decoding so that none has more than ``frame_max_pixels`` pixels, and only one
segment's frames are ever in memory.

decord is tried first: it seeks straight to the sampled frames.  It refuses some files that
play fine (a WebM whose header has no duration, ``no_duration.webm`` in the test corpus:
"Failed to measure duration/frame-count due to broken metadata") and reports nonsense for
others, so when it cannot open or read a file, or its frame count or fps is not plausible, PyAV
decodes the file from the start instead, keeping for each sample time the first frame at or
after it (this needs no duration in the header).  If decord fails part-way, PyAV takes over from
the first segment decord did not deliver.

What a clip gives is bounded by what the file really holds, whatever its header or timestamps
claim: no more frames are decoded than its bytes can hold (:func:`frame_budget`; past it the
rest is left with a warning), every segment holds a frame no earlier segment held (so there are
at most as many segments as frames: a few frames stamped days apart make a few segments, not
thousands of repeats), and a jump in timestamps is crossed in one step and noted in the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from kbterm.ingest.base import ParseContext, ParseError, Section, clock, describe
from kbterm.ingest.image import new_digest
from kbterm.models.encoding import thin_frames

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image as PILImage

log = logging.getLogger(__name__)

# What decord may report before we call it nonsense.
MAX_PLAUSIBLE_FPS = 1000.0
MAX_PLAUSIBLE_SECONDS = 31 * 24 * 3600.0
# A header can claim any frame count, rate or duration; the file's bytes cannot.  Every coded
# frame costs bytes in any container, even one that repeats the last picture (a static 16x16
# H.264 clip takes 22 bytes a frame in Matroska, 26 in MP4), so a file of S bytes holds at most
# S / MIN_BYTES_PER_FRAME frames (plus a small floor).  Neither decoder is let past that.
MIN_BYTES_PER_FRAME = 4
FRAME_BUDGET_FLOOR = 256
# decord samples frame i as the one shown at i / fps.  Where the frames' own timestamps are
# further than this (the time between two samples) from that (a jump in timestamps, a rate the
# header invents, a variable frame rate), decord would sample the wrong moments or spread a few
# frames over days: PyAV, which follows the timestamps, reads the file instead.
MAX_DRIFT_SECONDS = 1.0
# A jump in timestamps longer than this is reported in the ledger (nothing in it is indexed).
JUMP_WARN_SECONDS = 3600.0
# Floating-point slack when comparing sample times with frame times.
_EPS = 1e-6

__all__ = ["frame_budget", "frame_size", "parse_video", "sample_times"]


class _BackendFailed(Exception):
    """A decoder cannot (or can no longer) read the file; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sample_times(start: float, end: float, fps: float, max_frames: int) -> list[float]:
    """The sample times of the segment [start, end): every 1/fps seconds from ``start`` (at least
    ``start`` itself), thinned to ``max_frames`` by evenly spaced indices."""
    times = [start]
    k = 1
    while True:
        t = start + k / fps
        if t >= end - _EPS:
            break
        times.append(t)
        k += 1
    return thin_frames(times, max_frames)


def frame_budget(size_bytes: int) -> int:
    """The most frames a file of ``size_bytes`` can really hold (:data:`MIN_BYTES_PER_FRAME`)."""
    return FRAME_BUDGET_FLOOR + max(0, size_bytes) // MIN_BYTES_PER_FRAME


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def frame_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept and sides even, to at most ``max_pixels``."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _segment_end(start: float, seconds: float, duration: float | None) -> float:
    end = start + seconds
    return min(end, duration) if duration is not None and duration > start else end


def _section(
    start: float, end: float, timed_frames: list[tuple[float, "np.ndarray"]], fps: float
) -> Section:
    """A video section from (sample time, HxWx3 uint8 array) pairs."""
    from PIL import Image

    height, width = timed_frames[0][1].shape[:2]
    digest = new_digest(f"video:{fps:g}:{len(timed_frames)}x{width}x{height}:".encode())
    images: list[PILImage] = []
    converted: dict[int, PILImage] = {}  # a frame kept for several sample times is one image
    for _, array in timed_frames:
        digest.update(array)
        image = converted.get(id(array))
        if image is None:
            image = converted[id(array)] = Image.fromarray(array)
        images.append(image)
    middle = (start + end) / 2
    key = min(range(len(timed_frames)), key=lambda i: abs(timed_frames[i][0] - middle))
    return Section(
        kind="video", frames=images, keyframe=images[key], start_s=start, end_s=end,
        fingerprint=digest.hexdigest(),
    )


# --------------------------------------------------------------------------- decord

_stderr_lock = threading.Lock()


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment.

    decord logs its own errors ("ERROR opening: ...") from C++ straight to fd 2, past Python's
    sys.stderr, where they would scribble over a full-screen terminal UI.
    """
    with _stderr_lock:
        try:
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a replaced or closed sys.stderr
            pass
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 2)
            finally:
                os.close(devnull)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _decord_reader(path: Path, max_pixels: int) -> tuple[Any, int, float]:
    """An open decord reader scaling frames to ``max_pixels``, its frame count and fps."""
    try:
        import decord
    except ImportError as exc:  # pragma: no cover - decord is a declared dependency
        raise _BackendFailed(f"decord is not available: {exc}") from None

    decord.logging.set_level(decord.logging.QUIET)  # FFmpeg's own messages
    try:
        with _quiet_fd2():
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        n, fps = len(reader), float(reader.get_avg_fps())
    except Exception as exc:  # noqa: BLE001 - DECORDError, RuntimeError
        raise _BackendFailed(_decord_reason(exc)) from None
    if not (n >= 1 and math.isfinite(fps) and 0 < fps <= MAX_PLAUSIBLE_FPS
            and n / fps <= MAX_PLAUSIBLE_SECONDS):
        raise _BackendFailed(f"decord reports {n} frames at {fps:g} fps")
    size = _file_size(path)
    if n > frame_budget(size):
        raise _BackendFailed(f"decord counts {n} frames, more than {size} bytes can hold")
    try:
        height, width = reader[0].shape[:2]
        target = frame_size(width, height, max_pixels)
        if target != (width, height):
            del reader
            with _quiet_fd2():
                reader = decord.VideoReader(
                    str(path), ctx=decord.cpu(0), width=target[0], height=target[1]
                )
            if len(reader) != n:
                raise _BackendFailed("decord counts frames differently when scaling")
        _check_timeline(reader, n, fps)
    except _BackendFailed:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _BackendFailed(_decord_reason(exc)) from None
    return reader, n, fps


def _check_timeline(reader: Any, n: int, fps: float) -> None:
    """Refuse decord's picture of the file (frame i shown at i / fps) when the frames' own
    timestamps (decord's index of the packets) say otherwise by more than
    :data:`MAX_DRIFT_SECONDS`: a header's rate or duration that lies, a jump in timestamps.

    Up to 2,048 frames, evenly spaced and always the first and the last, are looked at; a
    jump anywhere shifts every frame after it, so it shows."""
    import numpy as np

    check = np.unique(np.linspace(0, n - 1, min(n, 2048)).round().astype(np.int64))
    stamps = np.asarray(reader.get_frame_timestamp(check.tolist()), dtype=np.float64)
    if stamps.ndim != 2 or stamps.shape[0] != len(check) or not np.isfinite(stamps).all():
        raise _BackendFailed("decord cannot tell the frames' timestamps")
    offsets = stamps[:, 0] - stamps[0, 0]
    drift = np.abs(offsets - check / fps)
    worst = int(drift.argmax())
    if drift[worst] > MAX_DRIFT_SECONDS:
        raise _BackendFailed(
            f"frame {int(check[worst])} is stamped {offsets[worst]:.6g} s but decord would "
            f"sample it at {check[worst] / fps:.6g} s ({n} frames at {fps:g} fps)")


def _decord_reason(exc: BaseException) -> str:
    # DECORDError messages start with a timestamp and a source location; keep the last part.
    text = str(exc).strip().splitlines()
    return text[0].rsplit(": ", 1)[-1].strip() if text else type(exc).__name__


def _decord_segments(path: Path, ctx: ParseContext) -> Iterator[Section]:
    limits = ctx.limits
    reader, n, fps = _decord_reader(path, limits.frame_max_pixels)
    duration = n / fps
    log.debug("%s: decord, %d frames at %.3f fps (%.2f s)", path, n, fps, duration)
    ctx.unit, ctx.total = "s", duration
    seconds = float(ctx.video_segment_seconds)
    newest = -1  # the last frame index a yielded segment holds
    start = 0.0
    while start < duration - _EPS:
        end = _segment_end(start, seconds, duration)
        times = sample_times(start, end, limits.fps, limits.max_frames)
        indices = [min(n - 1, max(0, round(t * fps))) for t in times]
        if indices[-1] <= newest:
            # Frames sparser than one a segment: this one would repeat a frame already
            # given.  Every segment brings a frame of its own, so there are at most as many
            # segments as frames; go straight to the one where the next frame is sampled.
            following = math.floor((newest + 0.5) / fps / seconds + _EPS) * seconds
            start = max(end, following)
            continue
        newest = indices[-1]
        try:
            batch = reader.get_batch(indices).asnumpy()
        except Exception as exc:  # noqa: BLE001
            raise _BackendFailed(f"at {start:g} s: {_decord_reason(exc)}") from None
        if batch.ndim != 4 or batch.shape[0] != len(indices) or batch.shape[3] != 3:
            raise _BackendFailed(f"at {start:g} s: decord returned frames of shape {batch.shape}")
        section = _section(start, end, list(zip(times, batch)), limits.fps)
        del batch
        ctx.done = end
        yield section
        start = end


# --------------------------------------------------------------------------- PyAV


def _av_reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else describe(exc)


def _pyav_segments(path: Path, ctx: ParseContext, resume_at: float = 0.0) -> Iterator[Section]:
    """Decode from the start; yield the segments that begin at or after ``resume_at``."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a declared dependency
        raise _BackendFailed(f"PyAV is not available: {exc}") from None

    limits = ctx.limits
    seconds = float(ctx.video_segment_seconds)
    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001 - av.error.* and OSError
        raise _BackendFailed(_av_reason(exc)) from None
    with container:
        if not container.streams.video:
            raise _BackendFailed("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        target = frame_size(width, height, limits.frame_max_pixels) if width and height else None
        known: float | None = None  # the header's duration, when it has one
        if stream.duration is not None and stream.time_base is not None:
            known = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            known = container.duration / 1_000_000
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        frame_period = 1.0 / float(rate) if rate else 0.0
        log.debug("%s: PyAV, %sx%s, header duration %s", path, width, height, known)
        ctx.unit, ctx.total = "s", known or 0

        index = int(resume_at // seconds + _EPS) if resume_at > 0 else 0
        start = index * seconds
        end = start + seconds
        times = sample_times(start, _segment_end(start, seconds, known), limits.fps,
                             limits.max_frames)
        kept: list[tuple[float, np.ndarray]] = []
        pending = 0  # times[pending] is the next sample time without a frame
        t0: float | None = None
        last_end = 0.0
        count = 0
        # Bounds from what the file really holds: frames decoded at most what its bytes can
        # hold; every segment yielded holds a frame no earlier segment held (so there are at
        # most as many segments as frames, whatever the timestamps say).
        size = _file_size(path)
        budget = frame_budget(size)
        newest = 0  # the number (1-based, decoding order) of the last frame yielded
        kept_newest = 0  # the number of the last frame in ``kept``
        latest: float | None = None  # the latest frame time so far
        jump = (0.0, 0.0)  # the widest gap between frame times
        stopped = ""
        try:
            for frame in container.decode(stream):
                if count >= budget:
                    stopped = (f"video decoding stopped after {count} frames: a file of {size} "
                               "bytes cannot hold more real frames")
                    break
                ft = frame.time
                if ft is None:  # no timestamp: assume a constant rate
                    ft = count * frame_period
                count += 1
                if t0 is None:
                    t0 = ft
                rel = ft - t0
                if latest is not None and rel - latest > jump[1] - jump[0]:
                    jump = (latest, rel)
                latest = rel if latest is None else max(latest, rel)
                span = frame.duration * frame.time_base if frame.duration and frame.time_base \
                    else frame_period
                # A frame lasts at most a segment, whatever its header says.
                last_end = max(last_end, rel + min(float(span), seconds))
                array = None
                while True:
                    # This frame is the first at or after every pending time up to it; a frame
                    # more than a segment late (a jump in timestamps) stands in for none.
                    while pending < len(times) and times[pending] <= rel + _EPS:
                        if rel - times[pending] <= seconds:
                            if array is None:
                                array = _frame_array(frame, target)
                            kept.append((times[pending], array))
                            kept_newest = count
                        pending += 1
                    if rel < end - _EPS:
                        break
                    if kept and kept_newest > newest:
                        ctx.done = min(end, known) if known else end
                        yield _section(start, end, kept, limits.fps)
                        newest = kept_newest
                    # Past a jump in timestamps, straight to the first segment this frame can
                    # stand in for (one ending more than a segment before it gets nothing):
                    # the gap costs nothing, however long it claims to be.
                    skip_to = math.floor(rel / seconds + _EPS) - 1
                    if skip_to > index + 1:
                        index, start = skip_to, skip_to * seconds
                    else:
                        index, start = index + 1, end
                    end = start + seconds
                    times = sample_times(start, _segment_end(start, seconds, known),
                                         limits.fps, limits.max_frames)
                    kept, pending = [], 0
        except _BackendFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - damaged packets part-way
            raise _BackendFailed(f"at {start:g} s: {_av_reason(exc)}") from None
        if kept and kept_newest > newest:
            yield _section(start, min(end, max(last_end, kept[-1][0])), kept, limits.fps)
        elif count == 0:
            raise _BackendFailed("the video has no frames")
        if jump[1] - jump[0] > JUMP_WARN_SECONDS:
            ctx.warn(f"the video's timestamps jump from {clock(jump[0])} to {clock(jump[1])}; "
                     "nothing is indexed in between")
        if stopped:
            ctx.warn(stopped)


def _frame_array(frame: Any, target: tuple[int, int] | None) -> "np.ndarray":
    import numpy as np

    if target is None:
        array = frame.to_ndarray(format="rgb24")
    else:
        array = frame.to_ndarray(format="rgb24", width=target[0], height=target[1])
    # FFmpeg pads rows to an aligned line size; the fingerprint hashes packed pixels.
    return np.ascontiguousarray(array)


# --------------------------------------------------------------------------- both


def header_duration(path: Path) -> float | None:
    """The duration a video file's header gives, in seconds (None: unreadable or not given).
    A header may lie; this is for checking a clip's range a user typed, not for indexing."""
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0] if container.streams.video else None
            if stream is not None and stream.duration is not None and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / 1_000_000 if container.duration else None
    except Exception:  # noqa: BLE001 - av.error.*, OSError: the model's reader says why
        return None


def parse_video(path: Path, ctx: ParseContext) -> Iterator[Section]:
    """Video sections of ``ctx.video_segment_seconds`` each, in time order."""
    if ctx.video_segment_seconds <= 0:
        raise ValueError("video_segment_seconds must be positive")
    if not Path(path).is_file():
        raise ParseError("cannot decode video: file not found")
    yielded = 0
    resume_at = 0.0
    try:
        for section in _decord_segments(path, ctx):
            yield section
            yielded += 1
            resume_at = section.end_s or resume_at
        return
    except _BackendFailed as exc:
        decord_reason = exc.reason
    log.debug("%s: decord failed (%s); decoding with PyAV from %.1f s", path, decord_reason,
              resume_at)
    try:
        for section in _pyav_segments(path, ctx, resume_at):
            yield section
            yielded += 1
    except _BackendFailed as exc:
        if yielded == 0:
            raise ParseError(f"cannot decode video: {exc.reason}") from None
        ctx.warn(f"video decoding stopped early: {exc.reason}")
    if yielded == 0:
        raise ParseError("cannot decode video: no frame could be read")
