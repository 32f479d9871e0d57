"""The index holds the text of every indexed file: its folder is readable by its user only."""

from __future__ import annotations

import os
import stat

import pytest

from indexing_helpers import explicit_data_dir, make_config, run_index

pytestmark = pytest.mark.usefixtures(explicit_data_dir.__name__)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_data_folder_is_created_private_and_an_open_one_is_closed(tmp_path,
                                                                      index_model_dir,
                                                                      index_embedder):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "diary.txt").write_text("Dear diary, a private thought.\n")
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh-data"
        run_index(make_config(index_model_dir, fresh, [folder]), embedder=index_embedder)
        assert mode(fresh) == 0o700
        existing = tmp_path / "open-data"
        existing.mkdir(mode=0o755)
        assert mode(existing) == 0o755
        run_index(make_config(index_model_dir, existing, [folder]), embedder=index_embedder)
        assert mode(existing) == 0o700
    finally:
        os.umask(old)
