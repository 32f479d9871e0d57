"""Device choice and model sources (no download ever happens in tests)."""

from __future__ import annotations

import pytest

from kbterm.errors import ModelLoadError, ModelNotAvailable
from kbterm.models.base import ModelSpec
from kbterm.models.embedder import Embedder
from kbterm.models.runtime import (
    choose_runtime,
    is_local_spec,
    modelscope_id,
    resolve_model,
)


@pytest.mark.parametrize(
    ("device", "dtype", "cuda", "flash", "expected"),
    [
        ("auto", "auto", False, False, ("cpu", "float32", "sdpa")),  # a CPU without bf16
        ("auto", "auto", True, False, ("cuda", "bfloat16", "sdpa")),
        ("auto", "auto", True, True, ("cuda", "bfloat16", "flash_attention_2")),
        ("cuda:1", "auto", True, True, ("cuda:1", "bfloat16", "flash_attention_2")),
        ("cuda", "float32", True, True, ("cuda", "float32", "sdpa")),
        ("cuda", "float16", True, True, ("cuda", "float16", "flash_attention_2")),
        ("cpu", "auto", True, True, ("cpu", "float32", "sdpa")),
        ("cpu", "bfloat16", False, False, ("cpu", "bfloat16", "sdpa")),
    ],
)
def test_choose_runtime(device, dtype, cuda, flash, expected):
    rt = choose_runtime(device, dtype, has_cuda=cuda, has_mps=False, has_flash_attn=flash,
                        bf16_flag=None)
    assert (rt.device, rt.dtype, rt.attn_implementation) == expected
    assert rt.reason  # doctor says why


@pytest.mark.parametrize(
    ("flag", "mps", "expected", "why"),
    [
        ("avx512_bf16", False, ("cpu", "bfloat16"), "native bf16 (avx512_bf16)"),
        ("amx_bf16", False, ("cpu", "bfloat16"), "native bf16 (amx_bf16)"),
        (None, False, ("cpu", "float32"), "bfloat16 is emulated"),
        (None, True, ("mps", "float16"), "half precision on MPS"),
    ],
)
def test_auto_picks_the_fastest_dtype_of_the_device(flag, mps, expected, why):
    rt = choose_runtime(has_cuda=False, has_mps=mps, bf16_flag=flag)
    assert (rt.device, rt.dtype) == expected
    assert why in rt.reason
    # A configured dtype always wins, and the reason says so.
    fixed = choose_runtime("cpu", "float32", bf16_flag=flag)
    assert fixed.dtype == "float32" and "dtype float32 is configured" in fixed.reason


def test_cpu_flags_are_read_from_cpuinfo():
    from kbterm.models.runtime import cpu_flags, cpu_native_bf16

    info = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n"
    assert cpu_native_bf16(cpu_flags(info)) == "avx512_bf16"
    assert cpu_native_bf16(cpu_flags("flags : fpu sse avx2\n")) is None
    # The flag alone is not enough when torch says it has no native kernel for it.
    assert cpu_native_bf16(cpu_flags(info), torch_says=False) is None
    assert cpu_native_bf16(cpu_flags(info), torch_says=True) == "avx512_bf16"
    assert cpu_flags("Features : fp asimd bf16\n") == {"fp", "asimd", "bf16"}


def test_auto_on_this_machine_follows_its_cpu():
    import torch

    from kbterm.models.runtime import cpu_native_bf16

    from kbterm.models.runtime import torch_native_bf16

    rt = choose_runtime()
    if not torch.cuda.is_available():
        native = cpu_native_bf16()
        assert rt.device == "cpu"
        assert rt.dtype == ("bfloat16" if native else "float32")
        if torch_native_bf16() is False:
            assert rt.dtype == "float32"  # emulated bfloat16 would be slower here
    assert rt.torch_dtype() in (torch.float32, torch.bfloat16)


def test_local_specs_and_hub_ids(tmp_path):
    assert not is_local_spec("Qwen/Qwen3-VL-Embedding-2B")
    assert is_local_spec(str(tmp_path))
    assert is_local_spec("./models/qwen")
    assert is_local_spec("~/models/qwen")
    assert is_local_spec("some/deep/folder")
    assert modelscope_id("Qwen/Qwen3-VL-Reranker-2B") == "qwen/Qwen3-VL-Reranker-2B"


def test_offline_missing_hub_model_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotAvailable) as info:
        resolve_model("Qwen/Not-A-Cached-Model", "embedder", offline=True)
    message = str(info.value)
    assert message == ("embedder model Qwen/Not-A-Cached-Model is not downloaded and kbterm is "
                       "offline; fetch it with: kbterm pull embedder")
    model = Embedder(ModelSpec("embedder", "Qwen/Not-A-Cached-Model", offline=True))
    with pytest.raises(ModelNotAvailable, match="kbterm pull embedder"):
        model.embed(["x"])


def test_missing_or_wrong_local_folder(tmp_path):
    with pytest.raises(ModelNotAvailable, match="model folder not found"):
        resolve_model(str(tmp_path / "absent"), "reranker")
    with pytest.raises(ModelNotAvailable, match="has no config.json"):
        resolve_model(str(tmp_path), "reranker")
    (tmp_path / "config.json").write_text("{}")
    model = Embedder(ModelSpec("embedder", str(tmp_path), dtype="float32"))
    with pytest.raises(ModelLoadError, match="cannot load embedder model from"):
        model.load()


def test_local_folder_resolves_to_itself(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir), "embedder") == tiny_model_dir


def test_registry_gives_one_lazy_model_per_role_and_settings(tiny_model_dir):
    from kbterm.config import config_from_dict
    from kbterm.models import get_embedder, get_generator, get_reranker, release_all

    raw = {"models": {"device": "cpu", "dtype": "float32", "embedder": {"model": str(tiny_model_dir)},
                      "reranker": {"model": str(tiny_model_dir)},
                      "generator": {"model": str(tiny_model_dir), "dtype": "float32"}}}
    config = config_from_dict(raw)
    release_all()  # another test of this process may have used these settings
    embedder = get_embedder(config)
    assert embedder is get_embedder(config_from_dict(raw))  # same settings: same object
    assert not embedder.loaded  # nothing loads until first use
    assert embedder.embed(["x"]).shape == (1, 64)
    other = config_from_dict({**raw, "models": {**raw["models"], "embedder": {
        "model": str(tiny_model_dir), "dimension": 64}}})
    assert get_embedder(other) is not embedder
    reranker, generator = get_reranker(config), get_generator(config)
    reranker.load()
    host = reranker.host()
    assert (host.kind, host.device, host.dtype) == ("in process", "cpu", "float32")
    release_all()
    assert not embedder.loaded and not reranker.loaded and not generator.loaded
