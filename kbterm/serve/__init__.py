"""``kbterm serve``: this machine's models behind vLLM's OpenAI-compatible API.

:mod:`~kbterm.serve.run` starts it, :mod:`~kbterm.serve.app` is its HTTP API,
:mod:`~kbterm.serve.hosts` holds the warm models, :mod:`~kbterm.serve.batcher` coalesces
concurrent requests, :mod:`~kbterm.serve.state` is the state file clients find it by.
"""
