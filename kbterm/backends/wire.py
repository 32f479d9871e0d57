"""Model inputs on the wire: the request bodies of vLLM's OpenAI-compatible API, both ways.

The client side (:func:`embedding_request`, :func:`rerank_request`, :func:`chat_request`) turns
kbterm's items into the bodies vLLM documents; the server side (:func:`item_from_content`,
:func:`local_chat`) turns such bodies back into items for the local models in ``kbterm serve``.
One module holds both directions, so they cannot drift apart.

Pictures travel inline and lossless: an image as a PNG ``data:`` URL in an ``image_url`` part,
already sized by the contract's pixel limits (a server's own resize is then a no-op); a list of
video frames as one ``video_url`` whose ``data:video/jpeg;base64,`` URL holds the frames, comma
separated, which is how vLLM reads a video given as frames (it opens each frame with PIL, which
reads PNG as well, so frames stay lossless).  A video file is sent whole as a ``data:`` URL of
its bytes.  Vectors come back as base64 float32 (``encoding_format: "base64"``).
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from kbterm.errors import InputError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from kbterm.models.encoding import VisionLimits
    from kbterm.models.inputs import Item

FRAMES_MEDIA_TYPE = "video/jpeg"  # vLLM's name for "a video given as frames"
VIDEO_FILE_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
                    ".mov": "video/quicktime", ".avi": "video/x-msvideo"}


# --------------------------------------------------------------------------- client side


def _png(image: "PILImage") -> bytes:
    """``image`` as PNG bytes, in RGB (the models see RGB: a PDF page's ``RGBX`` and other
    layouts PNG cannot hold lose nothing the model would have seen)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png_data_url(image: "PILImage") -> str:
    return "data:image/png;base64," + base64.b64encode(_png(image)).decode("ascii")


def frames_data_url(frames: Sequence["PILImage"]) -> str:
    encoded = [base64.b64encode(_png(frame)).decode("ascii") for frame in frames]
    return f"data:{FRAMES_MEDIA_TYPE};base64," + ",".join(encoded)


def wire_parts(parts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Local chat content parts (PIL images, frame lists, file URIs) as vLLM content parts."""
    out: list[dict[str, Any]] = []
    for part in parts:
        kind = part["type"]
        if kind == "text":
            out.append({"type": "text", "text": part["text"]})
        elif kind == "image":
            out.append({"type": "image_url", "image_url": {"url": png_data_url(part["image"])}})
        elif kind == "video":
            video = part["video"]
            if isinstance(video, str):  # a file:// URI
                path = Path(video.removeprefix("file://"))
                if part.get("video_start") is not None or part.get("video_end") is not None:
                    raise InputError(f"{path}: a time range of a video file cannot be sent to "
                                     "a model server (send its frames)")
                media = VIDEO_FILE_TYPES.get(path.suffix.lower(), "video/mp4")
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
                url = f"data:{media};base64," + base64.b64encode(data).decode("ascii")
            else:
                url = frames_data_url(video)
            out.append({"type": "video_url", "video_url": {"url": url}})
        else:  # pragma: no cover - media_parts makes only these three
            raise InputError(f"cannot send a {kind!r} part to a model server")
    return out


def item_content(item: "Item", limits: "VisionLimits") -> list[dict[str, Any]]:
    """An item's content parts, as the contract orders them (videos, images, texts; NULL when
    empty), on the wire."""
    from kbterm.models.encoding import parts_or_null
    from kbterm.models.inputs import to_content

    return wire_parts(parts_or_null(to_content(item), limits))


def embedding_request(model: str, item: "Item", instruction: str, limits: "VisionLimits",
                      dimensions: int = 0, *, frame_rate: bool = False) -> dict[str, Any]:
    """``POST /v1/embeddings`` for one item: the contract's two-message chat, rendered by the
    server with the generation prompt (vLLM's ``add_generation_prompt`` defaults to false on
    this endpoint).  ``frame_rate``: say the rate video frames were taken at, in
    ``mm_processor_kwargs`` (kbterm serve reads it; vLLM 0.33 refuses per-request processor
    arguments unless started with ``--trust-request-mm-kwargs``)."""
    from kbterm.models.encoding import with_punctuation

    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": with_punctuation(instruction)}]},
            {"role": "user", "content": item_content(item, limits)},
        ],
        "encoding_format": "base64",
        "add_generation_prompt": True,
        "continue_final_message": False,
        "add_special_tokens": False,
    }
    if dimensions:
        body["dimensions"] = dimensions
    fps = _frames_fps(item) if frame_rate else None
    if fps:
        body["mm_processor_kwargs"] = {"fps": fps}
    return body


def _frames_fps(item: "Item") -> float | None:
    """The rate a video given as frames was taken at (the model sees frame timestamps)."""
    from kbterm.models.inputs import to_content

    return next((v.fps for v in to_content(item).videos if v.is_frames and v.fps), None)


def rerank_document(item: "Item", limits: "VisionLimits") -> str | dict[str, Any]:
    """A query or document of ``/v1/rerank``: a string for plain text, else
    ``{"content": [parts]}``."""
    if isinstance(item, str):
        return item
    return {"content": item_content(item, limits)}


def rerank_request(model: str, query: "Item", documents: Sequence["Item"], instruction: str,
                   limits: "VisionLimits") -> dict[str, Any]:
    """``POST /v1/rerank``: vLLM renders each pair with the reranker's chat template
    (``qwen3_vl_reranker.jinja``), which takes the instruction from ``instruction`` (vLLM 0.33;
    the same as ``chat_template_kwargs.instruction``).  One ``{"content": [...]}`` is one
    document from vLLM 0.33 on (0.15 split its parts into separate documents)."""
    return rerank_body(model, rerank_document(query, limits),
                       [rerank_document(d, limits) for d in documents], instruction)


def rerank_body(model: str, query: Any, documents: list[Any], instruction: str
                ) -> dict[str, Any]:
    """The rerank body of a query and documents already on the wire."""
    return {
        "model": model,
        "query": query,
        "documents": documents,
        "instruction": instruction,
        "chat_template_kwargs": {"instruction": instruction},
        "return_documents": False,
    }


def chat_request(model: str, messages: list[dict[str, Any]], *, max_tokens: int,
                 temperature: float, stream: bool = True) -> dict[str, Any]:
    """``POST /v1/chat/completions``, streamed."""
    wired = [{"role": m["role"], "content": wire_parts(m["content"])} for m in messages]
    body: dict[str, Any] = {
        "model": model,
        "messages": wired,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": stream,
    }
    if temperature == 0:
        body["seed"] = 0
    return body


def decode_embedding(value: Any) -> np.ndarray:
    """An ``embedding`` of a response: base64 float32 or a list of floats."""
    if isinstance(value, str):
        try:
            return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"embedding is not base64 float32: {exc}") from None
    return np.asarray(value, dtype=np.float32)


def encode_embedding(vector: np.ndarray, encoding_format: str) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


# --------------------------------------------------------------------------- server side


class WireError(ValueError):
    """A request body that does not follow the API (the server answers 400)."""


class TooLarge(WireError):
    """A picture or a list over the server's limits (the server answers 413)."""


ImageDecoder = Callable[[bytes], "PILImage"]


def split_data_url(url: Any) -> tuple[str, str]:
    """(media type, base64 payload) of a ``data:`` URL."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise WireError("images and videos must be sent inline as data: URLs "
                        "(this server does not fetch URLs or read files)")
    head, sep, payload = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        raise WireError("a data: URL must be base64 (data:<type>;base64,<data>)")
    return head[: -len(";base64")].lower(), payload


def b64(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise WireError("a data: URL holds invalid base64") from None


def item_from_content(content: Any, decode_image: ImageDecoder, *, max_frames: int,
                      fps: float | None = None) -> "Item":
    """A wire content (a string or a list of parts) as one model item."""
    from kbterm.models.inputs import Image, Video

    if isinstance(content, str):
        return content
    if isinstance(content, dict) and "content" in content:
        content = content["content"]
    if not isinstance(content, list) or not content:
        raise WireError("content must be a string or a non-empty list of parts")
    parts: list[Any] = []
    for part in content:
        if not isinstance(part, dict):
            raise WireError("every content part must be an object with a 'type'")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise WireError("a text part needs a string 'text'")
            parts.append(text)
        elif kind == "image_url":
            media, payload = split_data_url(_url(part, "image_url"))
            if not media.startswith("image/"):
                raise WireError(f"an image_url must hold an image, not {media}")
            parts.append(Image(decode_image(b64(payload))))
        elif kind == "video_url":
            media, payload = split_data_url(_url(part, "video_url"))
            if media != FRAMES_MEDIA_TYPE:
                raise WireError(f"videos must be sent as frames ({FRAMES_MEDIA_TYPE} data URL, "
                                f"comma-separated images), not {media}")
            frames = payload.split(",")
            if len(frames) > max_frames:
                raise TooLarge(f"a video of {len(frames)} frames is over this server's "
                               f"limit of {max_frames}")
            parts.append(Video([decode_image(b64(f)) for f in frames], fps=fps))
        else:
            raise WireError(f"unknown content part type {kind!r} "
                            "(text, image_url and video_url are understood)")
    if parts == ["NULL"]:
        return "NULL"
    return parts[0] if len(parts) == 1 else parts


def _url(part: dict[str, Any], key: str) -> Any:
    value = part.get(key)
    return value.get("url") if isinstance(value, dict) else value


def system_and_user(messages: Any) -> tuple[str | None, Any]:
    """The system text and the user content of an embedding chat."""
    if not isinstance(messages, list) or not messages:
        raise WireError("'messages' must be a non-empty list")
    system, user = None, None
    for message in messages:
        if not isinstance(message, dict):
            raise WireError("every message must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role == "system":
            system = content if isinstance(content, str) else "".join(
                p.get("text", "") for p in content or [] if isinstance(p, dict))
        elif role == "user":
            if user is not None:
                raise WireError("an embedding chat holds one user message")
            user = content
        elif role == "assistant" and message is messages[-1] and not _text_of(content):
            pass  # vLLM's example: an empty assistant turn + continue_final_message
        else:
            raise WireError(f"an embedding chat holds a system and a user message, not {role!r}")
    if user is None:
        raise WireError("an embedding chat needs a user message")
    return system, user


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def local_chat(messages: Any, decode_image: ImageDecoder, limits: "VisionLimits"
               ) -> list[dict[str, Any]]:
    """Chat-completion messages as the local generator's messages (PIL images)."""
    if not isinstance(messages, list) or not messages:
        raise WireError("'messages' must be a non-empty list")
    out = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in (
                "system", "user", "assistant"):
            raise WireError("every message needs a role of system, user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": [{"type": "text", "text": content}]})
            continue
        if not isinstance(content, list):
            raise WireError("message content must be a string or a list of parts")
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                media, payload = split_data_url(_url(part, "image_url"))
                parts.append({"type": "image", "image": decode_image(b64(payload)),
                              "min_pixels": limits.image_min_pixels,
                              "max_pixels": limits.image_max_pixels})
            else:
                raise WireError(f"unsupported chat content part {kind!r}")
        out.append({"role": message["role"], "content": parts})
    return out
