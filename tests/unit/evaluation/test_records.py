"""Eval records name the question even when the prompt ends with an assistant prefix."""

from __future__ import annotations

import pytest

from grpo_ray.data.prompts import PromptRecipe, with_assistant_prefix
from grpo_ray.evaluation.records import sample_records
from grpo_ray.evaluation.table import score_eval

pytestmark = pytest.mark.unit


def test_samples_show_the_question_and_the_whole_reply():
    demo = ("1 + 1?", "<reasoning>\n1 + 1 = 2\n</reasoning>\n<answer>\n2\n</answer>")
    rows = [{"question": "2 + 2?", "answer": "4", "prompt": PromptRecipe("S", (demo,), "<reasoning>\n").messages("2 + 2?")}]
    texts = with_assistant_prefix([rows[0]["prompt"]], ["2 + 2 = 4\n</reasoning>\n<answer>\n4\n</answer>\n"])
    result = score_eval(rows, texts)
    (record,) = sample_records(rows, texts, result)
    assert record["question"] == "2 + 2?"  # not the prefix, which is the prompt's last message
    assert record["response"].startswith("<reasoning>\n2 + 2 = 4")
    assert record["extracted"] == "4"
    assert result.means["strict_format"] == 0.5 and result.means["hard_correctness"] == 1.0
