"""Format rewards: does the completion follow ``<reasoning>…</reasoning><answer>…</answer>``?

Strict and soft format pay 0.5 each and the XML tag count 0.125 per well-placed tag (0.5 at
most, less 0.001 per character after the answer): the values of the GSM8K reference run (see the
docs/training.md), kept so that reward means compare with its table. Text after the closing answer tag
costs 0.5, so a model does not ramble on once it has answered. Each takes ``tag_style``
("reasoning" or "thinking") for the reasoning tag's name.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Sequence

from grpo_ray.data.formats import TagStyle
from grpo_ray.rewards.parsing import Completion, completion_text, resolve_tag_style
from grpo_ray.rewards.registry import REWARDS


@functools.lru_cache(maxsize=None)
def _strict_pattern(style: TagStyle) -> re.Pattern[str]:
    # Zero or more trailing newlines, and DOTALL so the blocks may span lines: a completion that
    # stops right at the closing tag, or reasons over several lines, still fits the template.
    r_open, r_close = re.escape(style.reasoning_open), re.escape(style.reasoning_close)
    a_open, a_close = re.escape(style.answer_open), re.escape(style.answer_close)
    return re.compile(rf"^{r_open}\n.*?\n{r_close}\n{a_open}\n.*?\n{a_close}\n*$", re.DOTALL)


@functools.lru_cache(maxsize=None)
def _soft_pattern(style: TagStyle) -> re.Pattern[str]:
    r_open, r_close = re.escape(style.reasoning_open), re.escape(style.reasoning_close)
    a_open, a_close = re.escape(style.answer_open), re.escape(style.answer_close)
    return re.compile(rf"{r_open}.*?{r_close}\s*{a_open}.*?{a_close}", re.DOTALL)


@REWARDS.register("strict_format", in_process=True)
def strict_format_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float]:
    """0.5 when the whole completion is exactly the template, else 0.0.

    The template is ``<reasoning>\\n…\\n</reasoning>\\n<answer>\\n…\\n</answer>`` followed by
    zero or more newlines and nothing else; blocks may span several lines.

    >>> strict_format_reward(
    ...     prompts=None,
    ...     completions=["<reasoning>\\n2+2=4\\n</reasoning>\\n<answer>\\n4\\n</answer>\\n", "4"],
    ... )
    [0.5, 0.0]
    """
    pattern = _strict_pattern(resolve_tag_style(tag_style))
    return [0.5 if pattern.match(completion_text(c)) else 0.0 for c in completions]


@REWARDS.register("soft_format", in_process=True)
def soft_format_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float]:
    """0.5 when the completion starts with a reasoning block followed by an answer block.

    Whitespace between the blocks and text after the answer are allowed; text before the
    reasoning tag is not (``re.match``, anchored at the start).

    >>> soft_format_reward(
    ...     prompts=None,
    ...     completions=["<thinking>add</thinking> <answer>4</answer> done", "<answer>4</answer>"],
    ...     tag_style="thinking",
    ... )
    [0.5, 0.0]
    """
    pattern = _soft_pattern(resolve_tag_style(tag_style))
    return [0.5 if pattern.match(completion_text(c)) else 0.0 for c in completions]


def count_xml(text: str, tag_style: str | TagStyle = "reasoning") -> float:
    """0.125 per well-placed tag, less 0.001 per trailing character.

    Computed exactly as the reference run's ``count_xml`` did, so its means compare, quirks
    included: the ``<answer>`` tag's penalty counts the characters after ``\\n</answer>\\n``,
    which is the *whole text* when that string is absent; the ``</answer>`` tag's penalty counts
    the characters after ``\\n</answer>`` less one, so a text ending right at the tag gains 0.001.

    >>> count_xml("<reasoning>\\nr\\n</reasoning>\\n<answer>\\n4\\n</answer>\\n")
    0.5
    """
    style = resolve_tag_style(tag_style)
    r_open, r_close = style.reasoning_open, style.reasoning_close
    a_open, a_close = style.answer_open, style.answer_close
    count = 0.0
    if text.count(f"{r_open}\n") == 1:
        count += 0.125
    if text.count(f"\n{r_close}\n") == 1:
        count += 0.125
    if text.count(f"\n{a_open}\n") == 1:
        count += 0.125
        count -= len(text.split(f"\n{a_close}\n")[-1]) * 0.001
    if text.count(f"\n{a_close}") == 1:
        count += 0.125
        count -= (len(text.split(f"\n{a_close}")[-1]) - 1) * 0.001
    return count


@REWARDS.register("xml_count", in_process=True)
def xml_count_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float]:
    """:func:`count_xml` of each completion: at most 0.5; each trailing character costs 0.001.

    >>> xml_count_reward(
    ...     prompts=None,
    ...     completions=[[{"role": "assistant", "content": "<answer>\\n4\\n</answer>\\n"}]],
    ... )
    [0.125]
    """
    style = resolve_tag_style(tag_style)
    return [count_xml(completion_text(c), style) for c in completions]


# Whatever follows the first closing answer tag.
@functools.lru_cache(maxsize=None)
def _after_answer_pattern(style: TagStyle) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(style.answer_close)}\s*(.*)$", re.DOTALL)


@REWARDS.register("text_after_answer", in_process=True)
def text_after_answer_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float]:
    """-0.5 when text follows the closing answer tag or the tag is missing, else 0.0.

    Only whitespace may follow ``</answer>``; the penalty stops a model from rambling on after
    it has answered.

    >>> text_after_answer_reward(
    ...     prompts=None, completions=["<answer>4</answer>\\n", "<answer>4</answer> Hope it helps", "4"]
    ... )
    [0.0, -0.5, -0.5]
    """
    pattern = _after_answer_pattern(resolve_tag_style(tag_style))
    rewards = []
    for c in completions:
        match = pattern.search(completion_text(c))
        rewards.append(0.0 if match and not match.group(1).strip() else -0.5)
    return rewards
