"""System prompts and tag styles reach every row; the arithmetic built-in as a dataset."""

from __future__ import annotations

import pytest

from grpo_ray.data import load_prompt_dataset
from grpo_ray.data.arithmetic import heldout_problems
from grpo_ray.data.prompts import build_prompt, resolve_system_prompt
from grpo_ray.formats import get_tag_style

from .conftest import system_turn, user_turn

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("style", ["reasoning", "thinking"])
def test_tag_style_sets_the_default_system_prompt(style: str) -> None:
    ds = load_prompt_dataset("arithmetic", split="test", tag_style=style)
    assert {system_turn(r) for r in ds} == {get_tag_style(style).system_prompt}
    assert f"<{get_tag_style(style).reasoning_tag}>" in system_turn(ds[0])


def test_explicit_system_prompt_is_used_verbatim() -> None:
    ds = load_prompt_dataset("arithmetic", split="test", system_prompt="Answer in <answer> tags.", limit=5)
    assert [system_turn(r) for r in ds] == ["Answer in <answer> tags."] * 5


def test_empty_system_prompt_means_no_system_message() -> None:
    row = load_prompt_dataset("arithmetic", split="test", system_prompt="", limit=1)[0]
    assert [m["role"] for m in row["prompt"]] == ["user"]


def test_unknown_tag_style_fails_before_loading() -> None:
    with pytest.raises(ValueError, match="unknown tag_style 'xml'; known: reasoning, thinking"):
        load_prompt_dataset("/no/such/file.csv", tag_style="xml")


def test_resolve_system_prompt_appends_a_dataset_instruction() -> None:
    default = get_tag_style("reasoning").system_prompt
    assert resolve_system_prompt(None, "reasoning", "One word.") == default + "\nOne word."
    assert resolve_system_prompt("Mine.", "reasoning", "One word.") == "Mine."


def test_build_prompt_never_includes_anything_but_system_and_question() -> None:
    assert build_prompt("S", "Q") == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]


def test_arithmetic_dataset_splits_and_subsets() -> None:
    train = load_prompt_dataset("arithmetic")
    assert len(train) == 20000
    test = load_prompt_dataset("arithmetic", split="test")
    assert test["question"] == [p["question"] for p in heldout_problems()]
    assert [user_turn(r) for r in test] == test["question"]
    assert not set(train["question"]) & set(test["question"])
    two = load_prompt_dataset("arithmetic", split="train", subset="two_step", limit=300, seed=3)
    assert len(two) == 300 and set(two["steps"]) == {2}
    assert set(load_prompt_dataset("arithmetic", split="test", subset="one_step")["steps"]) == {1}
    other_seed = load_prompt_dataset("arithmetic", split="train", subset="two_step", limit=300, seed=4)
    assert other_seed["question"] != two["question"]


def test_arithmetic_unknown_split_and_subset() -> None:
    with pytest.raises(ValueError, match="^arithmetic: unknown split 'dev'; known: train, test$"):
        load_prompt_dataset("arithmetic", split="dev")
    with pytest.raises(ValueError, match="^arithmetic: unknown arithmetic subset"):
        load_prompt_dataset("arithmetic", subset="three_step")
