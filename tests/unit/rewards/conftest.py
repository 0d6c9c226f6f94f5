"""Fixtures that run each reward test over both tag styles and both completion shapes.

Tests write completions in the ``<reasoning>`` style as plain strings; ``render`` turns one into
the parametrised tag style and shape (string, or TRL's chat messages).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from tests.unit.rewards.helpers import as_chat, restyle


@pytest.fixture(params=["reasoning", "thinking"])
def style(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["string", "chat"])
def shape(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def render(style: str, shape: str) -> Callable[[str], Any]:
    def make(text: str) -> Any:
        text = restyle(text, style)
        return text if shape == "string" else as_chat(text)

    return make
