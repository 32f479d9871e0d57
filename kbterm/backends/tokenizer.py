"""The embedder's tokenizer without its weights, for cutting text into chunks.

A Qwen3-VL checkpoint's fast tokenizer is its ``tokenizer.json``; the ``tokenizers`` library
reads it alone (a few MB, no torch, no transformers), and gives the same ids and character
offsets as the checkpoint's ``Qwen2TokenizerFast`` (tests/test_backends.py checks).  It comes
from the checkpoint's folder, from the Hub (that one file, cached), or from a ``kbterm serve``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from kbterm.errors import ModelNotAvailable

TOKENIZER_FILE = "tokenizer.json"


class FileTokenizer:
    """A ``tokenizer.json`` behind the call the chunker makes (Hugging Face style)."""

    def __init__(self, data: bytes | str | Path) -> None:
        from tokenizers import Tokenizer

        if isinstance(data, (str, Path)):
            self._tok = Tokenizer.from_file(str(data))
        else:
            self._tok = Tokenizer.from_str(data.decode("utf-8"))

    def __call__(self, text: str, add_special_tokens: bool = False,
                 return_offsets_mapping: bool = False) -> dict[str, Any]:
        enc = self._tok.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": enc.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = enc.offsets
        return out


def folder_tokenizer(folder: Path) -> FileTokenizer:
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise ModelNotAvailable(f"{folder} has no {TOKENIZER_FILE}: kbterm needs the "
                                "checkpoint's fast tokenizer to cut text into chunks")
    return FileTokenizer(path)


def hub_tokenizer(model: str, *, source: str = "huggingface", offline: bool = False
                  ) -> FileTokenizer:
    """The tokenizer of a Hub model, downloading only its tokenizer file when needed."""
    from kbterm.models.runtime import hub_offline, is_local_spec

    if is_local_spec(model):
        return folder_tokenizer(Path(model).expanduser())
    if source == "modelscope":
        from kbterm.models.runtime import modelscope_id

        try:
            from modelscope.hub.snapshot_download import snapshot_download as ms_download

            folder = Path(ms_download(modelscope_id(model), allow_patterns=[TOKENIZER_FILE]))
        except Exception as exc:  # noqa: BLE001 - any failure is one line
            raise ModelNotAvailable(
                f"cannot get the tokenizer of {model} from ModelScope: {exc}") from None
        return folder_tokenizer(folder)
    from huggingface_hub import hf_hub_download

    offline = hub_offline(offline)
    try:
        path = hf_hub_download(model, TOKENIZER_FILE, local_files_only=offline)
    except Exception as exc:  # noqa: BLE001 - not cached offline, 404, no network: one line
        how = ("it is not cached and kbterm is offline" if offline
               else str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise ModelNotAvailable(
            f"cannot get the tokenizer of {model} (needed to cut text into chunks): {how}; "
            f"when online, run: kbterm pull embedder --tokenizer-only") from None
    return FileTokenizer(Path(path))


def cached_tokenizer(data_dir: Path, data: bytes) -> FileTokenizer:
    """A tokenizer file a server sent, kept in the data folder by its hash."""
    from kbterm.paths import make_private_dir

    folder = data_dir / "tokenizers"
    make_private_dir(folder)
    path = folder / (hashlib.blake2b(data, digest_size=16).hexdigest() + ".json")
    if not path.is_file():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return FileTokenizer(path)
