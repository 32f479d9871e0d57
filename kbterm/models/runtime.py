"""Where a model comes from and where it runs.

* :func:`choose_runtime` decides device, dtype and attention kernel, and says why: CUDA gets
  bfloat16 with ``flash_attention_2`` when flash-attn imports (else ``sdpa``); Apple Silicon gets
  MPS in float16; a CPU with native bfloat16 (AVX512-BF16 or AMX) gets bfloat16, five times the
  float32 matmul rate on these machines (BENCHMARKS.md), and other CPUs float32, because
  emulated bfloat16 is slower than float32 there.
* :func:`resolve_model` turns a model spec (a Hub id or a local folder) into a local folder,
  downloading a Hub id on first use with a progress bar (Hugging Face or ModelScope).  Offline
  and not cached, it raises :class:`~kbterm.errors.ModelNotAvailable` with the exact command that
  fetches the model.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kbterm.errors import ModelNotAvailable

Role = Literal["embedder", "reranker", "generator"]
ROLES: tuple[Role, ...] = ("embedder", "reranker", "generator")


@dataclass(frozen=True)
class Runtime:
    """The device, dtype and attention implementation a model loads with."""

    device: str
    dtype: str
    attn_implementation: str
    reason: str = ""  # why this device and dtype, for kbterm doctor

    def torch_dtype(self):  # noqa: ANN201 - torch is imported lazily
        import torch

        return getattr(torch, self.dtype)


def flash_attn_available() -> bool:
    """Whether the optional ``flash-attn`` package (extra ``gpu``) is installed."""
    return importlib.util.find_spec("flash_attn") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


# CPU flags (as Linux's /proc/cpuinfo names them) that mean bfloat16 matmuls run natively.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (Linux; elsewhere an empty set)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def torch_native_bf16() -> bool | None:
    """Whether this torch build runs bfloat16 natively on this CPU (AVX512-BF16 or AMX
    kernels), or None when it does not say.  A flag in /proc/cpuinfo is not enough: a CPU
    whose flags a virtual machine hides, or a torch built without those kernels, emulates
    bfloat16, several times slower than float32 (BENCHMARKS.md, "Model hosts")."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported",
                                                     "_is_amx_tile_supported")]
    checks = [c for c in checks if callable(c)]
    if not checks:
        return None
    return any(bool(check()) for check in checks)


ASK_TORCH = "ask"


def cpu_native_bf16(flags: set[str] | None = None, torch_says: bool | None | str = ASK_TORCH
                    ) -> str | None:
    """The CPU flag that gives native bfloat16, or None: the flag must be there and torch
    must use it.  ``torch_says``: what torch reports (asked of this torch when the flags are
    this CPU's; flags given alone are trusted)."""
    if torch_says == ASK_TORCH:
        torch_says = torch_native_bf16() if flags is None else None
    flags = cpu_flags() if flags is None else flags
    flag = next((f for f in NATIVE_BF16_FLAGS if f in flags), None)
    return None if flag is None or torch_says is False else flag


def choose_runtime(
    device: str = "auto",
    dtype: str = "auto",
    *,
    has_cuda: bool | None = None,
    has_mps: bool | None = None,
    has_flash_attn: bool | None = None,
    bf16_flag: str | None | bool = False,
) -> Runtime:
    """Pick device, dtype and attention kernel; ``auto`` follows the model contract on CUDA
    and the fastest exact-enough precision elsewhere.  ``bf16_flag``: the CPU flag giving
    native bfloat16 (False: read it from this CPU)."""
    why: list[str] = []
    if device == "auto":
        if has_cuda is None:
            has_cuda = cuda_available()
        if not has_cuda and has_mps is None:
            has_mps = mps_available()
        device = "cuda" if has_cuda else "mps" if has_mps else "cpu"
        why.append({"cuda": "CUDA is available", "mps": "Apple GPU (MPS) is available",
                    "cpu": "no GPU"}[device])
    else:
        why.append(f"device {device} is configured")
    on_cuda = device.startswith("cuda")
    if dtype == "auto":
        if on_cuda:
            dtype = "bfloat16"
            why.append("bfloat16 as the model card runs it")
        elif device == "mps":
            dtype = "float16"
            why.append("half precision on MPS")
        else:
            flag = cpu_native_bf16() if bf16_flag is False else bf16_flag
            if flag:
                dtype = "bfloat16"
                why.append(f"bfloat16: this CPU has native bf16 ({flag})")
            else:
                dtype = "float32"
                why.append("float32: this CPU has no native bf16 (AVX512-BF16 or AMX), where "
                           "bfloat16 is emulated and slower")
    else:
        why.append(f"dtype {dtype} is configured")
    if on_cuda and dtype in ("bfloat16", "float16"):
        if has_flash_attn is None:
            has_flash_attn = flash_attn_available()
        attn = "flash_attention_2" if has_flash_attn else "sdpa"
    else:
        attn = "sdpa"
    return Runtime(device=device, dtype=dtype, attn_implementation=attn, reason="; ".join(why))


# --------------------------------------------------------------------------- model sources


def is_local_spec(spec: str) -> bool:
    """A spec is a local folder when it looks like a path or names an existing folder."""
    if spec.startswith(("/", ".", "~")) or spec.count("/") != 1 or "\\" in spec:
        return True  # a Hub id is exactly "org/name"
    return Path(spec).expanduser().is_dir()


def modelscope_id(spec: str) -> str:
    """ModelScope names the Qwen checkpoints ``qwen/<name>``."""
    org, _, name = spec.partition("/")
    return f"qwen/{name}" if org == "Qwen" else spec


def fetch_command(role: str) -> str:
    return f"kbterm pull {role}"


def hub_offline(offline_setting: bool = False) -> bool:
    """Offline when the config says so or ``HF_HUB_OFFLINE`` is set (as huggingface_hub reads it)."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return offline_setting or flag in ("1", "true", "yes", "on")


def cached_model_path(spec: str, source: str = "huggingface") -> Path | None:
    """The local folder of a model if it is a folder or already downloaded, else None."""
    if is_local_spec(spec):
        path = Path(spec).expanduser()
        return path if (path / "config.json").is_file() else None
    if source == "modelscope":
        return _modelscope_cached(spec)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if (folder / "config.json").is_file() else None


def _modelscope_cached(spec: str) -> Path | None:
    if importlib.util.find_spec("modelscope") is None:
        return None
    from modelscope.hub.snapshot_download import snapshot_download

    try:
        folder = Path(snapshot_download(modelscope_id(spec), local_files_only=True))
    except Exception:  # noqa: BLE001 - modelscope raises plain exceptions when not cached
        return None
    return folder if (folder / "config.json").is_file() else None


def resolve_model(
    spec: str,
    role: str,
    *,
    source: str = "huggingface",
    offline: bool = False,
) -> Path:
    """Return a local folder for ``spec``, downloading a Hub id (with a progress bar) if needed."""
    if is_local_spec(spec):
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise ModelNotAvailable(f"{role} model folder not found: {path}")
        if not (path / "config.json").is_file():
            raise ModelNotAvailable(
                f"{role} model folder {path} has no config.json: is it a Hugging Face checkpoint?"
            )
        return path
    cached = cached_model_path(spec, source)
    if cached is not None:
        return cached
    if hub_offline(offline):
        raise ModelNotAvailable(
            f"{role} model {spec} is not downloaded and kbterm is offline; "
            f"fetch it with: {fetch_command(role)}"
        )
    return download_model(spec, role, source=source)


def download_model(spec: str, role: str, *, source: str = "huggingface") -> Path:
    """Download a Hub model with a progress bar and return its local folder."""
    if source == "modelscope":
        if importlib.util.find_spec("modelscope") is None:
            raise ModelNotAvailable(
                "models.source is 'modelscope' but the modelscope package is not installed; "
                "install it with: pip install 'kbterm[modelscope]'"
            )
        from modelscope.hub.snapshot_download import snapshot_download as ms_download

        try:
            return Path(ms_download(modelscope_id(spec)))
        except Exception as exc:  # noqa: BLE001 - report any download failure in one line
            raise ModelNotAvailable(
                f"cannot download {role} model {modelscope_id(spec)} from ModelScope: "
                f"{_one_line(exc)}; retry with: {fetch_command(role)}"
            ) from None
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import enable_progress_bars

    enable_progress_bars()  # loading a model silences them; a download should show its bar
    try:
        return Path(snapshot_download(spec))
    except Exception as exc:  # noqa: BLE001 - connection, auth, 404: all one line for the user
        raise ModelNotAvailable(
            f"cannot download {role} model {spec} from Hugging Face: {_one_line(exc)}; "
            f"when online, run: {fetch_command(role)}"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
