from __future__ import annotations

import re

import pytest

from grpo_ray.rewards import (
    count_xml,
    soft_format_reward,
    strict_format_reward,
    text_after_answer_reward,
    xml_count_reward,
)
from tests.unit.rewards.helpers import restyle

pytestmark = pytest.mark.unit


# --- references: each reward as first written, in plain code ---------------------------------
# One literal pattern each and no tag-style machinery, so the library's versions are checked against them.
def reference_count_xml(text: str, tag: str = "reasoning") -> float:
    # The reference hard-codes "reasoning"; `tag` renames it for the thinking style, nothing else.
    count = 0.0
    if text.count(f"<{tag}>\n") == 1:
        count += 0.125
    if text.count(f"\n</{tag}>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return count


def reference_strict_format(text: str) -> float:  # any number of trailing newlines; blocks span lines
    pattern = r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n*$"
    return 0.5 if re.match(pattern, text, re.DOTALL) else 0.0


def reference_soft_format(text: str) -> float:  # anchored at the start (re.match); blocks span lines
    pattern = r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>"
    return 0.5 if re.match(pattern, text, re.DOTALL) else 0.0


def reference_text_after_answer(text: str) -> float:  # -0.5 unless only whitespace follows </answer>
    match = re.compile(r"</answer>\s*(.*)$", re.DOTALL).search(text)
    if not match:
        return -0.5
    return 0.0 if match.group(1).strip() == "" else -0.5


PERFECT = "<reasoning>\nr\n</reasoning>\n<answer>\n4\n</answer>\n"  # 48 characters
TRICKY = [
    PERFECT,
    PERFECT[:-1],  # no trailing newline
    PERFECT + "\n\n\n",
    PERFECT + "The end.",
    PERFECT + "\n<answer>\n5\n</answer>\n",  # a second answer block
    "<reasoning>\nline one\nline two\n</reasoning>\n<answer>\n4\n</answer>\n",
    "<reasoning>\nr\n</reasoning>\n\n<answer>\n4\n</answer>\n",  # blank line between blocks
    "<reasoning>r</reasoning><answer>4</answer>",  # no newlines at all
    "<reasoning>\nr\n</reasoning> <answer>\n4\n</answer>",
    " <reasoning>\nr\n</reasoning>\n<answer>\n4\n</answer>\n",  # leading space
    "Sure!\n<reasoning>\nr\n</reasoning>\n<answer>\n4\n</answer>\n",
    "<answer>\n4\n</answer>\n<reasoning>\nr\n</reasoning>\n",  # blocks swapped
    "<reasoning>\nr\n</reasoning>\n<answer>\n4",  # unclosed answer
    "<reasoning>\nr\n</reasoning>\n",
    "<answer>\n4\n</answer>\n",
    "<reasoning>\n<reasoning>\nr\n</reasoning>\n<answer>\n4\n</answer>\n",  # duplicated tag
    "<reasoning>\r\nr\r\n</reasoning>\r\n<answer>\r\n4\r\n</answer>\r\n",  # Windows newlines
    "<reasoning>\n\n</reasoning>\n<answer>\n\n</answer>\n",  # empty blocks
    "4",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
def test_count_xml_equals_reference(text: str, style: str) -> None:
    styled = restyle(text, style)
    assert count_xml(styled, style) == reference_count_xml(styled, style)


@pytest.mark.parametrize("text", TRICKY)
def test_format_rewards_equal_reference(text: str, style: str) -> None:
    styled = restyle(text, style)
    assert strict_format_reward(None, [styled], tag_style=style) == [reference_strict_format(text)]
    assert soft_format_reward(None, [styled], tag_style=style) == [reference_soft_format(text)]
    assert text_after_answer_reward(None, [styled], tag_style=style) == [reference_text_after_answer(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # four tags, nothing after "\n</answer>\n"; the last penalty is (len("\n") - 1) = 0
        (PERFECT, 0.5),
        # no "\n</answer>\n": the <answer> penalty counts the whole text (47 characters; 45 with
        # <thinking>, a letter shorter twice), and the </answer> penalty is (0 - 1) * 0.001, a
        # bonus: 0.5 - 0.047 + 0.001
        (PERFECT[:-1], {"reasoning": 0.454, "thinking": 0.456}),
        # "The end." is 8 characters: -0.008 twice (the second counts "\nThe end." less one)
        (PERFECT + "The end.", 0.484),
        # three extra newlines: first penalty len("\n\n\n") = 3, second len("\n\n\n\n") - 1 = 3
        (PERFECT + "\n\n\n", 0.494),
        # only the answer block, starting the text: "\n<answer>\n" is absent, so only </answer>
        ("<answer>\n4\n</answer>\n", 0.125),
        # two answer blocks: neither answer tag counts once, the reasoning ones do
        (PERFECT + "\n<answer>\n5\n</answer>\n", 0.25),
        ("<reasoning>r</reasoning><answer>4</answer>", 0.0),
        ("", 0.0),
    ],
)
def test_xml_count_hand_computed(text: str, expected: float | dict, render, style: str) -> None:
    if isinstance(expected, dict):
        expected = expected[style]
    assert xml_count_reward(None, [render(text)], tag_style=style) == [pytest.approx(expected, abs=1e-12)]


def test_strict_format(render, style: str) -> None:
    texts = [
        PERFECT,  # 0.5
        PERFECT[:-1],  # zero trailing newlines: 0.5
        PERFECT + "\n\n",  # several: 0.5
        "<reasoning>\nstep 1\nstep 2\n</reasoning>\n<answer>\n4\n</answer>",  # multi-line: 0.5
        PERFECT + "The end.",  # text after: 0
        "<reasoning>r</reasoning>\n<answer>\n4\n</answer>",  # no newline inside tags: 0
        " " + PERFECT,  # leading space: 0
        "<answer>\n4\n</answer>\n",  # no reasoning: 0
    ]
    rewards = strict_format_reward(prompts=None, completions=[render(t) for t in texts], tag_style=style)
    assert rewards == [0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]


def test_soft_format(render, style: str) -> None:
    texts = [
        "<reasoning>r</reasoning><answer>4</answer>",  # 0.5
        "<reasoning>\nr\n</reasoning>\n\n  <answer>4</answer> extra text",  # whitespace between, text after: 0.5
        "<reasoning>a\nb</reasoning><answer>\n4\n</answer>",  # spans lines: 0.5
        "Sure! <reasoning>r</reasoning><answer>4</answer>",  # text before: 0
        "<reasoning>r</reasoning> so <answer>4</answer>",  # text between: 0
        "<reasoning>r</reasoning><answer>4",  # unclosed: 0
    ]
    rewards = soft_format_reward(prompts=None, completions=[render(t) for t in texts], tag_style=style)
    assert rewards == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0]


def test_text_after_answer(render, style: str) -> None:
    texts = [
        PERFECT,  # 0
        PERFECT + "\n \n\t",  # only whitespace: 0
        PERFECT + "Let me know if you need more help.",  # -0.5
        "<answer>4</answer>.",  # even punctuation: -0.5
        "<reasoning>\nr\n</reasoning>\n<answer>\n4",  # no closing tag: -0.5
        "",  # -0.5
    ]
    rewards = text_after_answer_reward(prompts=None, completions=[render(t) for t in texts], tag_style=style)
    assert rewards == [0.0, 0.0, -0.5, -0.5, -0.5, -0.5]


def test_tag_style_decides_the_reasoning_tag() -> None:
    thinking = restyle(PERFECT, "thinking")
    assert strict_format_reward(None, [thinking], tag_style="reasoning") == [0.0]
    assert strict_format_reward(None, [thinking], tag_style="thinking") == [0.5]
    assert strict_format_reward(None, [PERFECT]) == [0.5]  # "reasoning" is the default
    assert xml_count_reward(None, [thinking], tag_style="reasoning") == [0.25]  # answer tags only
