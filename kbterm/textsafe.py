"""Untrusted text made safe to show on a terminal.

File names, file contents, snippets, answers and error messages can hold control characters: an
ESC starts a sequence that sets the window title, writes the clipboard (OSC 52) or clears the
screen; a bidirectional override makes text read differently from what it is. Everything kbterm
prints or draws from such text goes through :func:`visible`, which shows each of them as a
harmless visible escape (``\\x1b``, ``\\x07``, ``\\u202e``). ``--json`` output stays exact: JSON
escapes control characters itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls but tab and newline, DEL, C1 controls; bidi embeddings, overrides and isolates;
# the line and paragraph separators (they break lines on some terminals).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_WITH_WHITESPACE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, keep_newlines: bool = True) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``).

    Tabs and newlines are kept unless ``keep_newlines`` is False (for one-line fields such as
    a file name or a status line, where a newline would be an escape too).
    """
    s = text if isinstance(text, str) else str(text)
    if keep_newlines:
        s = s.replace("\r\n", "\n")  # a Windows line end is a line end, not a control
    pattern = _UNSAFE if keep_newlines else _UNSAFE_WITH_WHITESPACE
    return pattern.sub(_escape, s)


def one_line(text: object) -> str:
    """A single-line field (a file name, a citation): every control character escaped."""
    return visible(text, keep_newlines=False)


def is_safe(text: str) -> bool:
    """True when :func:`visible` would leave ``text`` as it is."""
    return _UNSAFE.search(text) is None


# What json.dumps(ensure_ascii=False) leaves raw: DEL, C1 controls, separators, bidi controls.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def json_dumps(data: Any, **kwargs: Any) -> str:
    """JSON text that is exact (it parses back to ``data``) and terminal-safe: non-ASCII text
    stays readable, while every control character is a ``\\uXXXX`` escape."""
    text = json.dumps(data, ensure_ascii=False, **kwargs)
    # Outside strings JSON is ASCII, so every match is inside a string: escaping it there
    # keeps the value.
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
