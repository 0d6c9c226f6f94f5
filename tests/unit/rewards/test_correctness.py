from __future__ import annotations

import pytest

from grpo_ray.rewards import correctness_reward, integer_reward, soft_correctness_reward

pytestmark = pytest.mark.unit


def wrap(answer: str) -> str:
    return f"<reasoning>\nsome working\n</reasoning>\n<answer>\n{answer}\n</answer>\n"


def test_correctness(render, style: str) -> None:
    completions = [
        wrap("72"),  # exact: 1
        wrap("72 units"),  # hard correctness is exact: 0
        wrap("$72"),  # 0
        "72",  # no tags: the whole text is the answer: 1
        "<reasoning>\nr\n</reasoning>\n<answer>\n72",  # unclosed answer still extracts: 1
        wrap("1080"),  # gold "1,080" loses its comma: 1
        wrap("1,080"),  # ... so the comma form does not match: 0
        wrap("-10"),  # 1
        wrap("5"),  # no gold: None
        wrap("5"),  # empty gold: None
    ]
    golds = ["72", "72", "72", "72", "#### 72", "#### 1,080", "1,080", "-10", None, ""]
    rewards = correctness_reward(
        prompts=["q"] * len(completions), completions=[render(c) for c in completions], answer=golds, tag_style=style
    )
    assert rewards == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, None, None]


def test_correctness_reads_raw_gsm8k_solutions(render, style: str) -> None:
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert correctness_reward(None, [render(wrap("72")), render(wrap("24"))], answer=[gold, gold], tag_style=style) == [
        1.0,
        0.0,
    ]


def test_soft_correctness(render, style: str) -> None:
    cases = [  # (answer written by the model, gold, reward)
        ("$1,000", "1000", 1.0),
        ("1,000", "#### 1,000", 1.0),
        ("72 units", "72", 1.0),
        ("96%", "96", 1.0),
        ("$27", "27", 1.0),
        ("The answer is 27 dollars, not 28", "27", 1.0),  # the first number counts
        ("28, not 27", "27", 0.0),
        ("4.5", "4", 1.0),  # the number pattern stops at the decimal point
        ("-10", "-10", 1.0),  # the sign is kept ...
        ("-10", "10", 0.0),  # ... both ways
        ("no idea", "0", 1.0),  # no number reads as "0"
        ("no idea", "7", 0.0),
        ("7", None, None),
    ]
    completions = [render(wrap(a)) for a, _, _ in cases]
    rewards = soft_correctness_reward(None, completions, answer=[g for _, g, _ in cases], tag_style=style)
    assert rewards == [r for _, _, r in cases]


def test_integer(render, style: str) -> None:
    answers = ["42", "0", "$42", "42 units", "-3", "1,080", "4.5", " 7 ", "", "forty"]
    rewards = integer_reward(prompts=None, completions=[render(wrap(a)) for a in answers], tag_style=style)
    assert rewards == [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0]


def test_integer_without_tags_uses_whole_text() -> None:
    assert integer_reward(None, ["12", "12 apples", "<answer>12"]) == [0.5, 0.0, 0.5]


def test_gold_column_errors_name_the_column() -> None:
    with pytest.raises(ValueError, match="'correctness' needs the column 'answer'"):
        correctness_reward(None, ["1"])
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 2 completions"):
        soft_correctness_reward(None, ["1", "2"], answer=["1"])
    with pytest.raises(ValueError, match="column 'answer' has a string"):
        correctness_reward(None, ["1"], answer="1")
