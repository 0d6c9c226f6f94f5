"""LMJudge (the model half of the LM-judge reward) on the packaged tiny model, without Ray: P(yes)
per question, the same batched as alone (left padding does not move it), and varying by question."""

from __future__ import annotations

import pytest

from grpo_ray.actors.judge_worker import LMJudge, attach_judge
from grpo_ray.rewards.judge import DEFAULT_TEMPLATE, judge_questions
from grpo_ray.rewards.scorer import resolve_specs

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def judge() -> LMJudge:
    return LMJudge("builtin:arithmetic-base", batch_size=3)


def test_p_yes_is_a_probability_that_depends_on_the_question(judge: LMJudge) -> None:
    completions = ["<answer>5</answer>", "<answer>7</answer>", "I do not know", "5", "<answer>-2</answer>"]
    questions = judge_questions(["What is 2+3?"] * 5, completions, ["5"] * 5, DEFAULT_TEMPLATE)
    batched = judge.p_yes(questions)  # two forward passes of 3 and 2, padded on the left
    assert all(0.0 < p < 1.0 for p in batched)
    assert len({round(p, 6) for p in batched}) > 1, f"the judge gave every question the same P(yes): {batched}"
    alone = [judge.p_yes([q])[0] for q in questions]
    assert batched == pytest.approx(alone, abs=1e-5)


def test_ready_names_what_it_runs(judge: LMJudge) -> None:
    info = judge.ready()
    assert info["device"] == "cpu" and info["model"].endswith("arithmetic-base")
    assert info["yes_ids"] and info["no_ids"] and not set(info["yes_ids"]) & set(info["no_ids"])


def test_attach_judge_gives_the_handle_to_judge_rewards_only() -> None:
    specs = resolve_specs([{"name": "lm_judge", "kwargs": {"judge_prompt": "{completion}"}}, {"name": "correctness"}])
    judged, plain = attach_judge(specs, "HANDLE")
    assert judged["kwargs"] == {"judge_prompt": "{completion}", "judge": "HANDLE"}
    assert "judge" not in (plain.get("kwargs") or {})
