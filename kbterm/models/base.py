"""The lazy, releasable model handle shared by the embedder, reranker and generator."""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

from kbterm.errors import Cancelled, ModelLoadError
from kbterm.models.runtime import Runtime, choose_runtime, resolve_model

if TYPE_CHECKING:
    from kbterm.backends.base import Host
    from kbterm.models.encoding import Encoded, Encoder, VisionLimits

log = logging.getLogger(__name__)
T = TypeVar("T")
# Inputs are encoded (tokens + pixel tensors) in windows of this many batch budgets.
WINDOW_BUDGETS = 2


@dataclass(frozen=True)
class ModelSpec:
    """Which checkpoint a role uses and how it runs."""

    role: str
    model: str
    device: str = "auto"
    dtype: str = "auto"
    source: str = "huggingface"
    offline: bool = False


def quiet_transformers() -> None:
    """Loading reports and weight progress bars are noise in a terminal tool."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class LazyModel:
    """Loads its checkpoint on first use (once, thread-safely) and can be released.

    Subclasses implement :meth:`_load`, which receives the local folder and the runtime and sets
    whatever attributes inference needs; :meth:`_unload` drops them.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._lock = threading.RLock()
        self._loaded = False
        self.runtime: Runtime | None = None
        self.path: Path | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    # The backend interface (kbterm.backends.base): what consumers use, and nothing else.

    @property
    def calls(self) -> int:
        """Forward passes (or generations) run so far."""
        return int(getattr(self, "forward_calls", 0))

    def warm(self) -> None:
        self.load()

    def host(self) -> "Host":
        """In this process, on the device and dtype the checkpoint loaded with."""
        from kbterm.backends.base import Host

        self.load()
        rt = self.runtime
        assert rt is not None
        return Host("in process", self.spec.model, rt.device, rt.dtype, why=rt.reason)

    def model_folder(self) -> Path:
        """The checkpoint's local folder, resolved (downloaded if allowed) without loading."""
        if self.path is not None:
            return self.path
        return resolve_model(self.spec.model, self.spec.role, source=self.spec.source,
                             offline=self.spec.offline)

    def load(self) -> None:
        """Resolve (download if needed) and load the checkpoint; a no-op when loaded."""
        with self._lock:
            if self._loaded:
                return
            path = resolve_model(
                self.spec.model, self.spec.role, source=self.spec.source, offline=self.spec.offline
            )
            runtime = choose_runtime(self.spec.device, self.spec.dtype)
            quiet_transformers()
            try:
                self._load(path, runtime)
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise ModelLoadError(
                    f"cannot load {self.spec.role} model from {path}: {str(exc).splitlines()[0]}"
                ) from exc
            self.path, self.runtime, self._loaded = path, runtime, True
            log.info("loaded %s %s on %s (%s, %s)", self.spec.role, path, runtime.device,
                     runtime.dtype, runtime.attn_implementation)

    def release(self) -> bool:
        """Free the weights (the next call loads them again); whether they were loaded."""
        with self._lock:
            if not self._loaded:
                return False
            self._unload()
            self._loaded = False
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover
                pass
            return True

    @property
    def pass_overhead(self) -> int:
        """The fixed cost of a forward pass in padded tokens, for batch planning."""
        from kbterm.models.encoding import CPU_PASS_OVERHEAD_TOKENS, GPU_PASS_OVERHEAD_TOKENS

        on_gpu = self.runtime is not None and self.runtime.device.startswith("cuda")
        return GPU_PASS_OVERHEAD_TOKENS if on_gpu else CPU_PASS_OVERHEAD_TOKENS

    def _load(self, path: Path, runtime: Runtime) -> None:
        raise NotImplementedError

    def _unload(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _from_pretrained(cls: Any, path: Path, runtime: Runtime) -> Any:
        """``cls.from_pretrained`` on ``runtime``'s device, dtype and attention kernel."""
        model = cls.from_pretrained(
            str(path),
            dtype=runtime.torch_dtype(),
            attn_implementation=runtime.attn_implementation,
        )
        return model.to(runtime.device).eval()


class BatchedModel(LazyModel):
    """A model whose inputs are encoded one by one, then run in token-budgeted batches.

    Subclasses build the messages for an input; batching, padding side, truncation and the
    bookkeeping of forward passes live here once.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        batch_tokens: int,
        max_length: int,
        limits: "VisionLimits | None" = None,
    ) -> None:
        from kbterm.models.encoding import VisionLimits

        super().__init__(spec)
        self.batch_tokens = batch_tokens
        self.max_length = max_length
        self.limits = limits or VisionLimits()
        self._model: Any = None
        self._encoder: "Encoder | None" = None
        self.forward_calls = 0  # forward passes run (benchmarks and tests read it)

    def _windows(
        self, inputs: Sequence[Any], encode: Callable[[Any], "Encoded"]
    ) -> Iterator[tuple[int, list["Encoded"]]]:
        """Encode inputs in order, yielding (first index, encoded inputs) windows of at most
        ``WINDOW_BUDGETS`` x ``batch_tokens`` tokens, so that pixel tensors of a long list of
        images or pages never sit in memory all at once."""
        cap = WINDOW_BUDGETS * self.batch_tokens
        start, window, tokens = 0, [], 0
        for i, item in enumerate(inputs):
            enc = encode(item)
            window.append(enc)
            tokens += enc.length
            if tokens >= cap:
                yield start, window
                start, window, tokens = i + 1, [], 0
        if window:
            yield start, window

    def _run_batched(
        self,
        lengths: Sequence[int],
        forward: Callable[[list[int]], Sequence[T]],
        cancel: threading.Event | None = None,
    ) -> list[T]:
        """Call ``forward`` on planned batches of input indices; results in input order.
        ``cancel``: checked before each batch (:class:`~kbterm.errors.Cancelled` once set)."""
        from kbterm.models.encoding import plan_batches

        results: list[Any] = [None] * len(lengths)
        for batch in plan_batches(lengths, self.batch_tokens, self.pass_overhead):
            check_cancel(cancel)
            for i, result in zip(batch, forward(batch)):
                results[i] = result
        return results

    def _run(self, inputs: dict[str, Any], call: Callable[..., Any] | None = None,
             **kwargs: Any) -> Any:
        """One forward pass of the base model (serialised: the model keeps RoPE state).
        ``call``, given, runs instead of the model on the moved inputs."""
        import torch

        from kbterm.models.encoding import move

        with self._lock, torch.inference_mode():
            self.load()  # reloads if another thread released the model meanwhile
            inputs = move(inputs, self._model.device, self._model.dtype)
            out = call(inputs) if call is not None else self._model(**inputs, **kwargs)
            self.forward_calls += 1
        return out


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`~kbterm.errors.Cancelled` if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")
