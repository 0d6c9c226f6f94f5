"""Small text helpers for terminal output."""

from __future__ import annotations


def clip_line(text: str, width: int) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``width`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
