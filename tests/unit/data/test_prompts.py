"""System prompts and tag styles reach every row; the arithmetic built-in as a dataset."""

from __future__ import annotations

import pytest

from grpo_ray.data import load_prompt_dataset
from grpo_ray.data.arithmetic import heldout_problems
from grpo_ray.data.prompts import build_prompt, resolve_system_prompt
from grpo_ray.data.formats import get_tag_style

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


# -- prompt recipes: demonstrations and an assistant prefix -------------------------------------------

DEMO = ("Tom has 2 apples and buys 3. How many?", "<reasoning>\n2 + 3 = 5\n</reasoning>\n<answer>\n5\n</answer>")


def test_recipe_puts_demonstrations_before_the_question_and_the_prefix_last() -> None:
    from grpo_ray.data.prompts import PromptRecipe, assistant_prefix, question_of

    messages = PromptRecipe("S", (DEMO,), "<reasoning>\n").messages("Q?")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[1:3] == [{"role": "user", "content": DEMO[0]}, {"role": "assistant", "content": DEMO[1]}]
    assert question_of(messages) == "Q?"
    assert assistant_prefix(messages) == "<reasoning>\n"
    plain = PromptRecipe("", (), "").messages("Q?")
    assert plain == [{"role": "user", "content": "Q?"}] and assistant_prefix(plain) == ""


def test_rewards_see_the_prefix_and_the_generated_text() -> None:
    from grpo_ray.data.prompts import PromptRecipe, with_assistant_prefix
    from grpo_ray.rewards.formatting import strict_format_reward

    prompt = PromptRecipe("S", (), "<reasoning>\n").messages("Q?")
    generated = "2 + 2 = 4\n</reasoning>\n<answer>\n4\n</answer>\n"
    assert strict_format_reward(None, [generated]) == [0.0]  # what the engine returns alone
    (whole,) = with_assistant_prefix([prompt], [generated])
    assert strict_format_reward(None, [whole]) == [0.5]
    with pytest.raises(ValueError, match="one prompt per completion"):
        with_assistant_prefix([prompt], [generated, generated])


def test_loader_builds_rows_with_the_recipe() -> None:
    ds = load_prompt_dataset("arithmetic", split="test", limit=3, demonstrations=[DEMO], assistant_prefix="<reasoning>\n")
    for row in ds:
        roles = [m["role"] for m in row["prompt"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"]
        assert row["prompt"][3]["content"] == row["question"]
        assert row["prompt"][-1] == {"role": "assistant", "content": "<reasoning>\n"}


def test_data_config_carries_the_recipe_to_the_rows() -> None:
    from grpo_ray.config import DataConfig
    from grpo_ray.data.from_config import load_split

    cfg = DataConfig.model_validate({
        "source": "arithmetic", "assistant_prefix": "<reasoning>\n",
        "demonstrations": [{"question": DEMO[0], "answer": DEMO[1]}],
    })
    row = load_split(cfg, "test", limit=1)[0]
    assert row["prompt"][1:3] == [{"role": "user", "content": DEMO[0]}, {"role": "assistant", "content": DEMO[1]}]
    assert row["prompt"][-1]["content"] == "<reasoning>\n"
    assert [m["role"] for m in load_split(DataConfig(), "test", limit=1)[0]["prompt"]] == ["system", "user"]


def test_an_empty_demonstration_is_a_config_error() -> None:
    from grpo_ray.config import ConfigError, GRPOConfig

    with pytest.raises((ConfigError, ValueError), match="demonstrations"):
        GRPOConfig.model_validate({"data": {"demonstrations": [{"question": "Q", "answer": ""}]}})
