"""Runs the doctests in grpo_ray.data, so the examples in the docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

pytestmark = pytest.mark.unit

MODULES = ["grpo_ray.data.gsm8k", "grpo_ray.data.pubmedqa", "grpo_ray.data.prompts", "grpo_ray.data.stats"]


@pytest.mark.parametrize("module_name", MODULES)
def test_doctests(module_name: str) -> None:
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module_name} has no doctests"
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module_name}; see the output above"
