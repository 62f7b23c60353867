"""Text every layer may hand to a tokenizer."""

from __future__ import annotations


def encodable(text: str) -> str:
    """`text` with every code point UTF-8 cannot encode (a lone surrogate, e.g. from a path
    "/\\udcff") replaced by "?": such text made the tokenizer raise and ended the training run."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
