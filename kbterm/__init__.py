"""kbterm: a personal multimodal knowledge base that lives in the terminal."""

__version__ = "0.1.0"
