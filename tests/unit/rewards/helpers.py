"""Helpers shared by the reward tests (fixtures live in conftest.py)."""

from __future__ import annotations


def restyle(text: str, style: str) -> str:
    """Rename the reasoning tag (``<reasoning>`` -> ``<thinking>`` for the thinking style)."""
    return text.replace("<reasoning>", f"<{style}>").replace("</reasoning>", f"</{style}>")


def as_chat(text: str) -> list[dict[str, str]]:
    """A completion as TRL passes conversational ones: one assistant message."""
    return [{"role": "assistant", "content": text}]
