"""Correctness rewards for numeric answers (GSM8K): hard, soft and integer.

These are the three correctness columns of the evaluation table. On the GSM8K reference run
(Llama-3.1-8B-Instruct, 300 steps) they went from hard 0.287 -> 0.785, soft 0.701 -> 0.789 and
integer 0.164 -> 0.469.
Golds come from the ``answer`` column, raw (``... #### 72``) or already extracted (``72``).
"""

from __future__ import annotations

from typing import Any, Sequence

from grpo_ray.data.formats import TagStyle
from grpo_ray.rewards.parsing import (
    Completion,
    column,
    completion_text,
    extract_xml_answer,
    first_number,
    normalize_gold,
    resolve_tag_style,
)
from grpo_ray.rewards.registry import REWARDS


def _match_gold(completions, answer, tag_style, name: str, read) -> list[float | None]:
    """1.0 where ``read(extracted answer)`` equals the normalised gold, 0.0 where not, None without a gold."""
    golds = column(answer, "answer", len(completions), name)
    style = resolve_tag_style(tag_style)
    rewards: list[float | None] = []
    for c, raw_gold in zip(completions, golds):
        gold = normalize_gold(raw_gold)
        if gold is None:
            rewards.append(None)
        else:
            rewards.append(1.0 if read(extract_xml_answer(completion_text(c), style)) == gold else 0.0)
    return rewards


@REWARDS.register("correctness", in_process=True)
def correctness_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    answer: Sequence[Any] | None = None,
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the extracted answer equals the gold exactly, else 0.0; None without a gold.

    It pays 1.0, not the 2.0 some GRPO examples give, because soft correctness pays for the same
    right answer as well; scale it with the reward's weight in the config.

    >>> correctness_reward(
    ...     prompts=None,
    ...     completions=["<answer>\\n72\\n</answer>", "<answer>\\n72 units\\n</answer>", "72"],
    ...     answer=["... #### 72", "72", None],
    ... )
    [1.0, 0.0, None]
    """
    return _match_gold(completions, answer, tag_style, "correctness", lambda extracted: extracted)


@REWARDS.register("soft_correctness", in_process=True)
def soft_correctness_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    answer: Sequence[Any] | None = None,
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the first number in the extracted answer equals the gold, else 0.0.

    Lenient about units and formatting: ``$1,000``, ``72 units`` and ``96%`` read as
    ``1000``, ``72`` and ``96`` (see :func:`~grpo_ray.rewards.parsing.first_number`). None for
    rows without a gold.

    >>> soft_correctness_reward(
    ...     prompts=None,
    ...     completions=["<answer>\\n$1,000\\n</answer>", "<answer>\\n96%\\n</answer>", "<answer>7</answer>"],
    ...     answer=["1000", "96", "8"],
    ... )
    [1.0, 1.0, 0.0]
    """
    return _match_gold(completions, answer, tag_style, "soft_correctness", first_number)


@REWARDS.register("integer", in_process=True)
def integer_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float]:
    """0.5 when the extracted answer is all digits (``str.isdigit``), else 0.0.

    ``-3``, ``1,080`` and ``4.5`` are not integers here (as in the reference run): GSM8K golds
    are written as plain digits (after grpo_ray drops their thousands commas).

    >>> integer_reward(prompts=None, completions=["<answer>\\n42\\n</answer>", "<answer>\\n$42\\n</answer>"])
    [0.5, 0.0]
    """
    style = resolve_tag_style(tag_style)
    return [
        0.5 if extract_xml_answer(completion_text(c), style).isdigit() else 0.0 for c in completions
    ]
