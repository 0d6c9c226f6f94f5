"""Runs the doctests in grpo_ray.rewards, so the examples in the docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

from grpo_ray.rewards import REWARDS

pytestmark = pytest.mark.unit

MODULES = [
    "grpo_ray.rewards.parsing",
    "grpo_ray.rewards.formatting",
    "grpo_ray.rewards.correctness",
    "grpo_ray.rewards.length",
    "grpo_ray.rewards.medical",
    "grpo_ray.rewards.judge",
    "grpo_ray.rewards.isolation",
    "grpo_ray.rewards.registry",
    "grpo_ray.rewards.tools",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_doctests(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module_name} has no doctests"
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module_name}; see the output above"


@pytest.mark.parametrize("name", REWARDS.names())
def test_every_builtin_reward_has_a_doctest(name: str) -> None:
    fn = REWARDS.get(name)
    assert fn.__doc__ and ">>>" in fn.__doc__, f"reward {name!r} ({fn.__name__}) needs a doctest"
    assert fn.__module__ in MODULES, f"{fn.__module__} is not in MODULES, so its doctests never run"
