"""kbterm's configuration: typed sections read from one TOML file.

The file is found at ``--config``, else ``$KBTERM_CONFIG``, else the platform config path
(``~/.config/kbterm/config.toml`` on Linux).  Every key is optional and documented in
``config.example.toml``.  An unknown key or a value of the wrong type stops kbterm with one line
that names the key and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbterm.errors import ConfigError
from kbterm.paths import config_path, resolve_data_dir

DEFAULT_DOCUMENT_INSTRUCTION = "Represent the user's input."
DEFAULT_QUERY_INSTRUCTION = "Retrieve images or text relevant to the user's query."
DEFAULT_RERANK_INSTRUCTION = (
    "Given a search query, retrieve relevant candidates that answer the query."
)

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SOURCES = ("huggingface", "modelscope")


@dataclass
class LibraryConfig:
    """What to index."""

    folders: list[str] = field(default_factory=list)


BACKENDS = ("auto", "local", "server")
URL_RE = re.compile(r"^(https?://[^/\s]+(/\S*)?|unix:///\S+)$")


@dataclass
class ModelRoleConfig:
    """What every model role has: a checkpoint, where it runs, and (for a server) how to
    reach it."""

    model: str = ""
    device: str = ""  # "" = models.device
    dtype: str = ""  # "" = models.dtype
    backend: str = "auto"  # auto: a running kbterm serve, else in process; local; server
    url: str = ""  # the server (backend = "server")
    served_name: str = ""  # the model's name on the server ("" = the one it lists)
    api_key_env: str = ""  # environment variable holding the server's API key
    timeout_seconds: float = 120.0
    retries: int = 2


@dataclass
class EmbedderConfig(ModelRoleConfig):
    """Qwen3-VL-Embedding: one vector space for text, images, pages and video."""

    model: str = "Qwen/Qwen3-VL-Embedding-2B"
    dimension: int = 0
    document_instruction: str = DEFAULT_DOCUMENT_INSTRUCTION
    query_instruction: str = DEFAULT_QUERY_INSTRUCTION
    batch_tokens: int = 16384
    max_length: int = 8192
    in_flight: int = 8  # requests a server backend keeps in flight


@dataclass
class RerankerConfig(ModelRoleConfig):
    """Qwen3-VL-Reranker: scores (query, candidate) pairs."""

    model: str = "Qwen/Qwen3-VL-Reranker-2B"
    instruction: str = DEFAULT_RERANK_INSTRUCTION
    batch_tokens: int = 16384
    max_length: int = 10240
    vision_cache_mb: int = 512  # vision features of candidate pictures kept between queries


@dataclass
class GeneratorConfig(ModelRoleConfig):
    """Qwen3-VL-Instruct: writes answers from the retrieved evidence."""

    model: str = "Qwen/Qwen3-VL-2B-Instruct"
    max_new_tokens: int = 1024
    temperature: float = 0.0


@dataclass
class ModelsConfig:
    """Where models come from and where they run."""

    source: str = "huggingface"
    offline: bool = False
    device: str = "auto"
    dtype: str = "auto"
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    reranker: RerankerConfig = field(default_factory=RerankerConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)


@dataclass
class ChunkConfig:
    """Chunk size and overlap, in tokens of the embedder's tokenizer."""

    size: int = 512
    overlap: int = 50


@dataclass
class ChunkingConfig:
    """Chunking per file type."""

    text: ChunkConfig = field(default_factory=ChunkConfig)
    markdown: ChunkConfig = field(default_factory=ChunkConfig)
    html: ChunkConfig = field(default_factory=ChunkConfig)
    json: ChunkConfig = field(default_factory=ChunkConfig)
    pdf: ChunkConfig = field(default_factory=ChunkConfig)


DEFAULT_IGNORE = [
    "*.swp", "*.swo", "*~", "*.tmp", "*.part", "*.crdownload", ".DS_Store", "Thumbs.db",
    "__pycache__", "node_modules", ".git",
]


@dataclass
class IndexingConfig:
    """How files become chunks."""

    ignore: list[str] = field(default_factory=lambda: list(DEFAULT_IGNORE))
    video_segment_seconds: float = 30.0
    keep_versions_seconds: int = 10
    # Pixels of a PDF page image and of a photo when indexed (0: the default for the device
    # that embeds, see kbterm.resolution).
    page_max_pixels: int = 0
    image_max_pixels: int = 0
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)


@dataclass
class WatchConfig:
    """``kbterm watch``: how events become index updates."""

    debounce_seconds: float = 0.5
    batch_seconds: float = 5.0
    sweep_minutes: float = 10.0
    unload_models_after_seconds: float = 300.0
    log_file: str = ""


@dataclass
class ServeConfig:
    """``kbterm serve``: this machine's models behind vLLM's API, shared by every kbterm."""

    host: str = "127.0.0.1"
    port: int = 8470
    socket: bool = False  # listen on a Unix socket in the data folder instead of TCP
    api_key_env: str = ""  # required for any bind other than loopback or the socket
    roles: list[str] = field(default_factory=lambda: ["embedder", "reranker", "generator"])
    max_request_mb: float = 64.0
    max_documents: int = 256
    max_image_pixels: int = 64_000_000
    batch_wait_ms: float = 5.0
    max_batch_items: int = 64
    log_file: str = ""


@dataclass
class SearchConfig:
    """How many candidates retrieval keeps and the reranker sees."""

    candidates: int = 100
    rerank: int = 20


@dataclass
class AskConfig:
    """``kbterm ask``: which hits become the answer's evidence."""

    evidence: int = 6
    max_images: int = 3
    evidence_chars: int = 12000
    min_rerank_score: float = 0.5


IMAGE_MODES = ("auto", "kitty", "sixel", "halfcell", "unicode", "none")


@dataclass
class TuiConfig:
    """``kbterm`` (the terminal app)."""

    images: str = "auto"  # how previews draw images: one of IMAGE_MODES
    results: int = 20
    debounce_ms: int = 200
    rerank_budget_ms: int = 2000  # rerank only what fits in this on this host (0: all)


@dataclass
class McpConfig:
    """``kbterm mcp --http``: where the MCP server listens (stdio needs nothing)."""

    host: str = "127.0.0.1"
    port: int = 8471
    api_key_env: str = ""  # required for any bind other than loopback
    allowed_origins: list[str] = field(default_factory=list)  # browser origins let in


@dataclass
class Config:
    """The whole configuration; ``source`` is the file it was read from (None: defaults)."""

    data_dir: str = ""
    library: LibraryConfig = field(default_factory=LibraryConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    indexing: IndexingConfig = field(default_factory=IndexingConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    ask: AskConfig = field(default_factory=AskConfig)
    tui: TuiConfig = field(default_factory=TuiConfig)
    source: Path | None = field(default=None, metadata={"internal": True})

    @property
    def data_path(self) -> Path:
        """The folder holding the index (``KBTERM_DATA_DIR`` overrides ``data_dir``)."""
        return resolve_data_dir(self.data_dir)

    @property
    def serve_log_path(self) -> Path:
        """The log file of a detached ``kbterm serve``."""
        if self.serve.log_file:
            return Path(self.serve.log_file).expanduser()
        return self.data_path / "serve.log"

    @property
    def watch_log_path(self) -> Path:
        """The log file of a detached ``kbterm watch``."""
        if self.watch.log_file:
            return Path(self.watch.log_file).expanduser()
        return self.data_path / "watch.log"

    def folder_paths(self) -> list[Path]:
        """The watched folders, with ``~`` expanded."""
        return [Path(f).expanduser() for f in self.library.folders]


# --------------------------------------------------------------------------- loading


def load_config(explicit: str | Path | None = None) -> Config:
    """Read the configuration (see module docstring for where from)."""
    path, named = config_path(explicit)
    if not path.exists():
        if named:
            raise ConfigError(f"config file not found: {path}")
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    return config_from_dict(raw, path)


def config_from_dict(raw: dict[str, Any], source: Path | None = None) -> Config:
    """Build a validated :class:`Config` from parsed TOML (``source`` names it in errors)."""
    where = str(source) if source else "config"
    config = _build(Config, raw, "", where)
    config.source = source
    _check_values(config, where)
    return config


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {
        f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal", False)
    }


def _build(cls: type, raw: Any, prefix: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.')}' must be a table, not {_kind(raw)}")
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = prefix + key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{dotted}'{hint}")
        values[key] = _coerce(hints[key], value, dotted, where)
    return cls(**values)


def _coerce(hint: Any, value: Any, dotted: str, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, dotted + ".", where)
    origin = typing.get_origin(hint)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(
                f"{where}: '{dotted}' must be a list of {_PLURALS[item_type]}, not {_kind(value)}"
            )
        for i, item in enumerate(value):
            if not _is(item_type, item):
                raise ConfigError(
                    f"{where}: '{dotted}[{i}]' must be {_name(item_type)}, not {_kind(item)}"
                )
        return list(value)
    if not _is(hint, value):
        raise ConfigError(f"{where}: '{dotted}' must be {_name(hint)}, not {_kind(value)}")
    return float(value) if hint is float else value


def _is(hint: Any, value: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    raise TypeError(f"unsupported config type {hint!r}")


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _name(hint: Any) -> str:
    return _NAMES.get(hint, str(hint))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"


def _check_values(config: Config, where: str) -> None:
    """Checks that span more than a value's type."""

    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{where}: '{key}' {msg}")

    m = config.models
    if m.source not in SOURCES:
        raise bad("models.source", f"must be one of {', '.join(SOURCES)}, not {m.source!r}")
    roles = {name: getattr(m, name) for name in ("embedder", "reranker", "generator")}
    devices = [("models.device", m.device)] + [
        (f"models.{name}.device", role.device or "auto") for name, role in roles.items()
    ]
    for key, device in devices:
        if not DEVICE_RE.match(device):
            raise bad(key, f"must be auto, cpu, cuda, cuda:N or mps, not {device!r}")
    dtypes = [("models.dtype", m.dtype)] + [
        (f"models.{name}.dtype", role.dtype or "auto") for name, role in roles.items()
    ]
    for key, dtype in dtypes:
        if dtype not in DTYPES:
            raise bad(key, f"must be one of {', '.join(DTYPES)}, not {dtype!r}")
    for name, role in roles.items():
        if not role.model.strip():
            raise bad(f"models.{name}.model", "must name a Hugging Face model id or a local folder")
        if role.backend not in BACKENDS:
            raise bad(f"models.{name}.backend",
                      f"must be one of {', '.join(BACKENDS)}, not {role.backend!r}")
        if role.url and not URL_RE.match(role.url):
            raise bad(f"models.{name}.url",
                      f"must be http://host:port, https://… or unix:///path, not {role.url!r}")
        if role.backend == "server" and not role.url:
            raise bad(f"models.{name}.url", "must be set when backend is \"server\" "
                      "(for example http://gpu-box:8000)")
        if role.timeout_seconds <= 0:
            raise bad(f"models.{name}.timeout_seconds", "must be above 0")
        if not 0 <= role.retries <= 10:
            raise bad(f"models.{name}.retries", f"must be between 0 and 10, not {role.retries}")
        if role.api_key_env and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", role.api_key_env):
            raise bad(f"models.{name}.api_key_env", "must name an environment variable (the "
                      "key itself never goes in the config file)")
    if not 1 <= m.embedder.in_flight <= 256:
        raise bad("models.embedder.in_flight",
                  f"must be between 1 and 256, not {m.embedder.in_flight}")
    sv = config.serve
    if not 0 <= sv.port <= 65535:
        raise bad("serve.port", f"must be between 0 and 65535, not {sv.port}")
    unknown = [r for r in sv.roles if r not in roles]
    if unknown or not sv.roles:
        raise bad("serve.roles", "must list some of embedder, reranker, generator")
    for key, value in [("serve.max_request_mb", sv.max_request_mb),
                       ("serve.max_documents", sv.max_documents),
                       ("serve.max_image_pixels", sv.max_image_pixels),
                       ("serve.max_batch_items", sv.max_batch_items)]:
        if value <= 0:
            raise bad(key, "must be above 0")
    if not 0 <= sv.batch_wait_ms <= 1000:
        raise bad("serve.batch_wait_ms", f"must be between 0 and 1000, not {sv.batch_wait_ms:g}")
    if sv.api_key_env and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", sv.api_key_env):
        raise bad("serve.api_key_env", "must name an environment variable")
    dim = m.embedder.dimension
    if dim != 0 and dim < 64:
        raise bad("models.embedder.dimension", f"must be 0 (full size) or at least 64, not {dim}")
    for key, value, low in [
        ("models.embedder.batch_tokens", m.embedder.batch_tokens, 64),
        ("models.reranker.batch_tokens", m.reranker.batch_tokens, 64),
        ("models.embedder.max_length", m.embedder.max_length, 16),
        ("models.reranker.max_length", m.reranker.max_length, 16),
        ("models.generator.max_new_tokens", m.generator.max_new_tokens, 1),
        ("search.candidates", config.search.candidates, 1),
        ("search.rerank", config.search.rerank, 0),
        ("models.reranker.vision_cache_mb", m.reranker.vision_cache_mb, 0),
    ]:
        if value < low:
            raise bad(key, f"must be at least {low}, not {value}")
    seg = config.indexing.video_segment_seconds
    if not 1 <= seg <= 600:
        raise bad("indexing.video_segment_seconds", f"must be between 1 and 600, not {seg:g}")
    if config.indexing.keep_versions_seconds < 0:
        raise bad("indexing.keep_versions_seconds", "must not be negative")
    a = config.ask
    for key, value, low in [("ask.evidence", a.evidence, 1), ("ask.max_images", a.max_images, 0),
                            ("ask.evidence_chars", a.evidence_chars, 200)]:
        if value < low:
            raise bad(key, f"must be at least {low}, not {value}")
    if not 0 <= a.min_rerank_score < 1:
        raise bad("ask.min_rerank_score", f"must be between 0 and 1, not {a.min_rerank_score:g}")
    w = config.watch
    if not 0 <= w.debounce_seconds <= 60:
        raise bad("watch.debounce_seconds", f"must be between 0 and 60, not {w.debounce_seconds:g}")
    if w.batch_seconds < w.debounce_seconds:
        raise bad("watch.batch_seconds", "must not be less than watch.debounce_seconds")
    if w.sweep_minutes < 0:
        raise bad("watch.sweep_minutes", "must not be negative (0 turns the sweep off)")
    if w.unload_models_after_seconds < 0:
        raise bad("watch.unload_models_after_seconds",
                  "must not be negative (0 keeps models loaded)")
    t = config.tui
    if t.images not in IMAGE_MODES:
        raise bad("tui.images", f"must be one of {', '.join(IMAGE_MODES)}, not {t.images!r}")
    if not 1 <= t.results <= 200:
        raise bad("tui.results", f"must be between 1 and 200, not {t.results}")
    if not 0 <= t.debounce_ms <= 2000:
        raise bad("tui.debounce_ms", f"must be between 0 and 2000, not {t.debounce_ms}")
    for key in ("page_max_pixels", "image_max_pixels"):
        value = getattr(config.indexing, key)
        if value and not 4 * 32 * 32 <= value <= 1800 * 32 * 32:
            raise bad(f"indexing.{key}", "must be 0 (the default for the device) or between "
                      f"4096 and 1843200 (the model's maximum), not {value}")
    if not 0 <= t.rerank_budget_ms <= 600_000:
        raise bad("tui.rerank_budget_ms",
                  f"must be between 0 (no budget) and 600000, not {t.rerank_budget_ms}")
    if m.generator.temperature < 0:
        raise bad("models.generator.temperature", "must not be negative")
    if config.search.rerank > config.search.candidates:
        raise bad("search.rerank", "must not exceed search.candidates")
    for name in _fields(ChunkingConfig):
        chunk: ChunkConfig = getattr(config.indexing.chunking, name)
        key = f"indexing.chunking.{name}"
        if chunk.size < 16:
            raise bad(key + ".size", f"must be at least 16 tokens, not {chunk.size}")
        if not 0 <= chunk.overlap < chunk.size:
            raise bad(key + ".overlap", f"must be between 0 and size - 1, not {chunk.overlap}")


def iter_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (used to check that the example documents them all)."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for name in _fields(cls):
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            keys.extend(iter_keys(hint, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys
