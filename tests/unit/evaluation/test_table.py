"""The eval table on hand-written completions: every mean is worked out by hand below."""

from __future__ import annotations

import math

import pytest

from grpo_ray.evaluation.table import LABEL_METRICS, MATH_METRICS, markdown_table, metrics_for_rows, score_eval

pytestmark = pytest.mark.unit

PERFECT = "<reasoning>\n2 + 2 = 4\n</reasoning>\n<answer>\n4\n</answer>\n"
WITH_UNIT = "<reasoning>\nx\n</reasoning>\n<answer>\n4 apples\n</answer>\n"
NO_TAGS_WRONG = "the answer is 5"
NO_NEWLINES = "<reasoning>x</reasoning><answer>4</answer>"


def rows(golds):
    return [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": g} for i, g in enumerate(golds)]


def test_math_table_means_are_exact() -> None:
    #                 correctness soft  integer soft-format strict
    # PERFECT             1        1     0.5     0.5        0.5
    # WITH_UNIT           0        1     0       0.5        0.5
    # NO_TAGS_WRONG       0        0     0       0          0
    # NO_NEWLINES         1        1     0.5     0.5        0
    result = score_eval(rows(["4"] * 4), [PERFECT, WITH_UNIT, NO_TAGS_WRONG, NO_NEWLINES], MATH_METRICS)
    assert result.count == 4
    assert result.means == {
        "hard_correctness": 0.5, "soft_correctness": 0.75, "integer": 0.25, "soft_format": 0.375,
        "strict_format": 0.25,
    }
    assert result.values["hard_correctness"] == [1.0, 0.0, 0.0, 1.0]
    assert result.values["strict_format"] == [0.5, 0.5, 0.0, 0.0]


def test_gold_with_thousands_comma_is_normalised() -> None:
    text = "<reasoning>\n1000 + 80 = 1080\n</reasoning>\n<answer>\n1080\n</answer>\n"
    assert score_eval(rows(["1,080"]), [text], MATH_METRICS).means["hard_correctness"] == 1.0


def test_label_metrics_chosen_for_yes_no_maybe_golds() -> None:
    assert metrics_for_rows(rows(["yes", "no", "Maybe"])) == LABEL_METRICS
    assert metrics_for_rows(rows(["yes", "4"])) == MATH_METRICS
    texts = [
        "<reasoning>\nr\n</reasoning>\n<answer>\nyes\n</answer>\n",  # right
        "<reasoning>\nr\n</reasoning>\n<answer>\nno\n</answer>\n",  # wrong (gold maybe)
    ]
    result = score_eval(rows(["yes", "maybe"]), texts, LABEL_METRICS)
    assert result.means == {"accuracy": 0.5, "soft_format": 0.5, "strict_format": 0.5}


def test_tag_style_thinking() -> None:
    text = "<thinking>\n2 + 2 = 4\n</thinking>\n<answer>\n4\n</answer>\n"
    assert score_eval(rows(["4"]), [text], MATH_METRICS, tag_style="thinking").means["strict_format"] == 0.5
    assert score_eval(rows(["4"]), [text], MATH_METRICS, tag_style="reasoning").means["strict_format"] == 0.0


def test_rows_without_gold_leave_correctness_out() -> None:
    result = score_eval(rows([None]), [PERFECT], MATH_METRICS)
    assert math.isnan(result.means["hard_correctness"])
    assert result.means["strict_format"] == 0.5


def test_mismatched_lengths_rejected() -> None:
    with pytest.raises(ValueError, match="2 rows but 1 completions"):
        score_eval(rows(["1", "2"]), [PERFECT], MATH_METRICS)


def test_markdown_table_has_change_and_max_columns() -> None:
    table = markdown_table({"base": {"hard_correctness": 0.205}, "tuned": {"hard_correctness": 0.41}}, MATH_METRICS[:1])
    lines = table.splitlines()
    assert lines[0] == "| metric | base | tuned | change | max |"
    assert lines[2] == "| hard correctness | 0.205 | 0.410 | +0.205 | 1 |"
