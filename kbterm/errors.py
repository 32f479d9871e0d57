"""The errors kbterm reports to people: one line each, something they can act on."""

from __future__ import annotations


class KbtermError(Exception):
    """Base class of errors shown to the user as a single line (no traceback)."""


class ConfigError(KbtermError):
    """The configuration file is unreadable or holds an unknown key or a wrong value."""


class ModelNotAvailable(KbtermError):
    """A model is neither a local folder nor downloadable right now."""


class ModelLoadError(KbtermError):
    """A model folder exists but could not be loaded (wrong files, wrong architecture)."""


class InputError(KbtermError):
    """An input (image, video, text) given to a model cannot be read."""


class Cancelled(Exception):
    """Work stopped because its caller no longer wants the result (a newer keystroke).

    Not a :class:`KbtermError`: it is control flow, never shown as an error."""


class BackendUnavailable(KbtermError):
    """A model host (a ``kbterm serve`` or a vLLM server) is down, unreachable, refuses the
    API key or answers with a server error: the work waits, nothing is lost."""


class BackendProtocolError(BackendUnavailable):
    """A model host answered, but not with what its API documents (a wrong URL, another
    program on that port, a server bug)."""
