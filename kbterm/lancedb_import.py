"""Importing LanceDB without its REST client.

``import lancedb`` takes about 3.3 s on a laptop-class CPU, and half of it is the generated
REST client of Lance namespaces (``lance_namespace_urllib3_client``): ``lance_namespace``
needs only its data classes (``.models``), but the package's ``__init__`` first imports every
API class, each wrapped in pydantic validators.  kbterm opens local tables only, so
:func:`import_lancedb` registers that package unexecuted: ``.models`` is imported from its
folder as usual, and the first attribute asked of the package itself (``DataApi``, ...) runs
its real ``__init__`` then, so nothing is lost.  Every command that reads the index (search,
status, the TUI's first results) starts about 1.5 s sooner (``tests/test_store.py`` checks
both halves).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

REST_CLIENT = "lance_namespace_urllib3_client"


def _defer_package(name: str) -> None:
    """Register package ``name`` without running its ``__init__`` until an attribute of the
    package itself is asked for (its submodules import as usual)."""
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str) -> Any:  # PEP 562: only for names the module lacks
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        del module.__dict__["__getattr__"]
        spec.loader.exec_module(module)  # the real __init__, into this same module
        return getattr(module, attr)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = module


def import_lancedb() -> ModuleType:
    """``lancedb``, imported without the eager REST client when it is not loaded yet."""
    if "lancedb" not in sys.modules:
        _defer_package(REST_CLIENT)
    import lancedb

    return lancedb
