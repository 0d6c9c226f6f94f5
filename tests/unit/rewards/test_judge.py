"""The LM-judge reward's pure half: the questions it asks, P(yes) from logits, and its errors."""

from __future__ import annotations

import math

import pytest

from grpo_ray.rewards.judge import (
    DEFAULT_TEMPLATE,
    check_template,
    judge_questions,
    lm_judge_reward,
    p_yes,
    uses_judge,
)
from grpo_ray.rewards.registry import REWARDS

pytestmark = pytest.mark.unit

CHAT = [{"role": "system", "content": "Reason first."}, {"role": "user", "content": "What is 2+3?"}]


def test_p_yes_is_the_yes_mass_over_the_yes_or_no_mass() -> None:
    # by hand: yes spellings with logits ln 2 and ln 1 carry mass 3, the no spelling ln 1 carries 1: 3 / 4
    assert p_yes([[math.log(2.0), 0.0]], [[0.0]]) == [pytest.approx(0.75)]
    # logits shifted together change nothing; other tokens never enter
    assert p_yes([[100 + math.log(3.0)]], [[100.0]]) == [pytest.approx(0.75)]
    assert p_yes([[0.0], [-50.0]], [[-50.0], [0.0]]) == [pytest.approx(1.0), pytest.approx(0.0, abs=1e-12)]


def test_questions_fill_the_template_from_chat_prompts() -> None:
    (question,) = judge_questions([CHAT], [[{"role": "assistant", "content": "<answer>5</answer>"}]], [5], DEFAULT_TEMPLATE)
    assert "What is 2+3?" in question and "Reason first." not in question
    assert "Reference answer: 5" in question and "<answer>5</answer>" in question
    assert question.endswith("Answer yes or no.")
    (no_gold,) = judge_questions(["Q"], ["C"], None, "{question}|{answer}|{completion}")
    assert no_gold == "Q||C"


@pytest.mark.parametrize(("template", "fragment"), [
    ("{question} {reference}", "placeholders ['reference'] are unknown"),
    ("{question", "is not a format string"),
])
def test_a_bad_template_is_one_line_naming_the_fix(template: str, fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        check_template(template)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    check_template("literal {{braces}} and {completion}")  # escaped braces are fine


def test_without_a_judge_it_says_where_the_judge_comes_from() -> None:
    with pytest.raises(ValueError, match="needs the run's judge actor"):
        lm_judge_reward(["Q"], ["C"])


def test_it_is_registered_to_run_beside_its_judge() -> None:
    traits = REWARDS.traits("lm_judge")
    assert traits.judge and not traits.in_process
    assert uses_judge(["correctness", "lm_judge"]) and not uses_judge(["correctness", "xml_count"])
    assert uses_judge(["grpo_ray.rewards.judge:lm_judge_reward"])  # by module path too


def test_dataset_columns_do_not_clash_with_its_settings() -> None:
    # the arithmetic set has a "template" column: dataset columns arrive as kwargs beside the settings
    class Judge:
        def p_yes(self, texts):
            return [0.5 if t.startswith("Q: 2+2?") else 0.0 for t in texts]

    out = lm_judge_reward(["2+2?"], ["4"], judge=Judge(), judge_prompt="Q: {question} A: {completion}",
                          template=["sub_add"], answer=["4"], timeout_s=[1])
    assert out == [0.5]
