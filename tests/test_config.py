"""Configuration: defaults, the documented example, and one-line errors for bad keys and values."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kbterm.config import Config, iter_keys, load_config
from kbterm.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_defaults_without_a_file():
    config = load_config()
    assert config.source is None
    assert config.models.embedder.model == "Qwen/Qwen3-VL-Embedding-2B"
    assert config.models.reranker.model == "Qwen/Qwen3-VL-Reranker-2B"
    assert config.models.generator.model == "Qwen/Qwen3-VL-2B-Instruct"
    assert config.search.candidates == 100 and config.search.rerank == 20
    assert config.indexing.chunking.markdown.size == 512
    assert config.indexing.chunking.markdown.overlap == 50


def test_example_documents_every_key_with_its_default():
    example = flatten(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))
    keys = iter_keys()
    assert sorted(example) == sorted(keys)
    defaults = Config()
    for key in keys:
        value = defaults
        for part in key.split("."):
            value = getattr(value, part)
        assert example[key] == value, key
    # and every key has a comment line somewhere above it
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.count("\n#") > len(keys) // 2


def test_example_loads_as_a_config_file():
    config = load_config(EXAMPLE)
    assert config.source == EXAMPLE
    assert config.models.embedder.query_instruction.startswith("Retrieve")


def test_values_are_read(tmp_path):
    path = write(tmp_path, """
data_dir = "~/kb-data"
[library]
folders = ["~/Notes", "/srv/papers"]
[models]
device = "cpu"
[models.embedder]
dimension = 512
batch_tokens = 4096
[models.generator]
temperature = 1
[indexing.chunking.markdown]
size = 256
overlap = 32
[search]
candidates = 50
rerank = 10
""")
    config = load_config(path)
    assert config.library.folders == ["~/Notes", "/srv/papers"]
    assert config.folder_paths()[0] == Path.home() / "Notes"
    assert config.models.embedder.dimension == 512
    assert config.models.generator.temperature == 1.0
    assert isinstance(config.models.generator.temperature, float)
    assert config.indexing.chunking.markdown.size == 256
    assert config.indexing.chunking.text.size == 512  # untouched sections keep defaults
    assert config.search.rerank == 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[models.embedder]\ndimenson = 256\n",
         "unknown key 'models.embedder.dimenson' (did you mean 'models.embedder.dimension'?)"),
        ("[serch]\ncandidates = 5\n", "unknown key 'serch' (did you mean 'search'?)"),
        ("[search]\ncandidates = \"100\"\n",
         "'search.candidates' must be an integer, not the string '100'"),
        ("[models]\noffline = 1\n", "'models.offline' must be true or false, not int 1"),
        ("[search]\nrerank = true\n", "'search.rerank' must be an integer, not the boolean true"),
        ("[library]\nfolders = \"~/Notes\"\n",
         "'library.folders' must be a list of strings, not the string '~/Notes'"),
        ("[library]\nfolders = [\"a\", 3]\n", "'library.folders[1]' must be a string, not int 3"),
        ("models = 3\n", "'models' must be a table, not int 3"),
        ("[models.embedder]\ndimension = 32\n",
         "'models.embedder.dimension' must be 0 (full size) or at least 64, not 32"),
        ("[models]\ndevice = \"gpu\"\n", "'models.device' must be auto, cpu, cuda, cuda:N or mps"),
        ("[models.reranker]\ndtype = \"fp8\"\n", "'models.reranker.dtype' must be one of"),
        ("[models]\nsource = \"github\"\n", "'models.source' must be one of huggingface, modelscope"),
        ("[search]\ncandidates = 10\nrerank = 20\n", "'search.rerank' must not exceed"),
        ("[indexing.chunking.pdf]\nsize = 100\noverlap = 100\n",
         "'indexing.chunking.pdf.overlap' must be between 0 and size - 1"),
        ("[tui]\nimages = \"iterm\"\n",
         "'tui.images' must be one of auto, kitty, sixel, halfcell, unicode, none, not 'iterm'"),
        ("[tui]\nresults = 0\n", "'tui.results' must be between 1 and 200, not 0"),
        ("[tui]\ndebounce_ms = 5000\n", "'tui.debounce_ms' must be between 0 and 2000"),
    ],
)
def test_bad_config_is_one_line_naming_key_and_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "[models\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_named_config_must_exist(tmp_path, monkeypatch):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(missing)
    monkeypatch.setenv("KBTERM_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config()


def test_kbterm_config_env_and_flag_order(tmp_path, monkeypatch):
    env_file = write(tmp_path, "[search]\ncandidates = 7\nrerank = 3\n")
    flag_file = tmp_path / "flag.toml"
    flag_file.write_text("[search]\ncandidates = 9\nrerank = 3\n")
    monkeypatch.setenv("KBTERM_CONFIG", str(env_file))
    assert load_config().search.candidates == 7
    assert load_config(flag_file).search.candidates == 9  # --config beats the env var


def test_default_config_path_is_platform_config_dir(tmp_path):
    # XDG_CONFIG_HOME points into tmp_path (conftest); platformdirs follows it on Linux.
    config_file = tmp_path / "xdg-config" / "kbterm" / "config.toml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text("[search]\ncandidates = 42\n")
    config = load_config()
    assert config.source == config_file
    assert config.search.candidates == 42


def test_data_dir_precedence(tmp_path, monkeypatch):
    path = write(tmp_path, f'data_dir = "{tmp_path / "from-config"}"\n')
    monkeypatch.setenv("KBTERM_DATA_DIR", str(tmp_path / "from-env"))
    assert load_config(path).data_path == tmp_path / "from-env"
    monkeypatch.delenv("KBTERM_DATA_DIR")
    assert load_config(path).data_path == tmp_path / "from-config"
    assert load_config().data_path.name == "kbterm"  # the platform data dir
