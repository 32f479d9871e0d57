"""What the benchmark scripts share: a config naming the tiny random checkpoint for every model
role, and the environment of the ``kbterm`` subprocesses they time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROLES = ("embedder", "reranker", "generator")


def model_config(model: Path, data: Path, **extra: Any) -> dict[str, Any]:
    """Config dict (for ``config_from_dict``): ``model`` on the CPU in every role, index in
    ``data``."""
    return {"data_dir": str(data),
            "models": {"device": "cpu", **{r: {"model": str(model)} for r in ROLES}}, **extra}


def write_config(path: Path, model: Path, data: Path) -> Path:
    """The same config as a TOML file, for ``kbterm --config``."""
    path.write_text(f'data_dir = "{data}"\n[models]\ndevice = "cpu"\n'
                    + "".join(f'[models.{r}]\nmodel = "{model}"\n' for r in ROLES))
    return path


def kbterm_env() -> dict[str, str]:
    """Offline, and no KBTERM_DATA_DIR overriding the config's data folder."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("KBTERM_DATA_DIR", None)
    return env
