"""Length rewards: penalties for long completions and a bonus for reasoning that shows its work.

``length_penalty`` is a step at ``max_tokens``; ``soft_overlong`` is DAPO's ramp over the last tokens
before the generation limit; ``min_reasoning_length`` pays for reasoning long enough to rule out
shortcuts.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

from grpo_ray.data.formats import TagStyle
from grpo_ray.rewards.parsing import (
    Completion,
    column,
    completion_text,
    extract_reasoning,
    resolve_tag_style,
)
from grpo_ray.rewards.registry import REWARDS


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Any:
    """A Hugging Face tokenizer from a local folder or hub id, loaded once per process."""
    from transformers import AutoTokenizer  # heavy: import only when a path is given

    return AutoTokenizer.from_pretrained(path)


def count_tokens(
    completions: Sequence[Completion],
    completion_ids: Sequence[Sequence[int]] | None = None,
    tokenizer: Any = None,
) -> list[int]:
    """Tokens per completion, from the best source available.

    1. ``completion_ids`` (what TRL and grpo_ray's reward workers pass): the sampled token ids,
       so the count is exact.
    2. ``tokenizer``: a Hugging Face tokenizer, or a path / hub id loaded once and cached;
       counted without special tokens.
    3. Otherwise whitespace-separated words: a rough stand-in, usually fewer than BPE tokens, so
       set ``max_tokens`` lower when relying on it.

    >>> count_tokens(["a b c", "d"]), count_tokens(["ignored"], completion_ids=[[5, 6, 7, 8]])
    ([3, 1], [4])
    """
    if completion_ids is not None:
        ids = column(completion_ids, "completion_ids", len(completions), "length_penalty")
        return [len(row) for row in ids]
    texts = [completion_text(c) for c in completions]
    if tokenizer is not None:
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return [len(t.split()) for t in texts]


@REWARDS.register("length_penalty", in_process=True)
def length_penalty_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    max_tokens: int = 100,
    penalty: float = -0.5,
    completion_ids: Sequence[Sequence[int]] | None = None,
    tokenizer: Any = None,
    **kwargs: Any,
) -> list[float]:
    """0.0 for a completion under ``max_tokens`` tokens, else ``penalty`` (-0.5).

    Tokens are counted by :func:`count_tokens`. (``len(tokenizer(text))`` would count the keys
    of the tokenizer's output, ``input_ids`` and ``attention_mask``, not tokens.)

    >>> length_penalty_reward(prompts=None, completions=["x", "y"], completion_ids=[[1] * 99, [1] * 100])
    [0.0, -0.5]
    """
    counts = count_tokens(completions, completion_ids, tokenizer)
    return [0.0 if n < max_tokens else float(penalty) for n in counts]


@REWARDS.register("min_reasoning_length", in_process=True)
def min_reasoning_length_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    min_words: int = 10,
    tag_style: str | TagStyle = "reasoning",
    **kwargs: Any,
) -> list[float]:
    """0.5 when the reasoning block holds at least ``min_words`` words, else 0.0.

    Words are whitespace-separated, so ``23 + 48 = 71`` is five. A missing reasoning block
    scores 0.0. The default of 10 is two short arithmetic steps; GSM8K solutions run 30-100
    words and medical ones longer, so raise it for those (a bar the model passes from the start
    carries no signal).

    >>> min_reasoning_length_reward(
    ...     prompts=None,
    ...     completions=["<reasoning>\\n23 + 48 = 71\\n71 - 12 = 59\\n</reasoning>", "<reasoning>59</reasoning>"],
    ... )
    [0.5, 0.0]
    """
    style = resolve_tag_style(tag_style)
    rewards = []
    for c in completions:
        reasoning = extract_reasoning(completion_text(c), style)
        rewards.append(0.5 if reasoning is not None and len(reasoning.split()) >= min_words else 0.0)
    return rewards


@REWARDS.register("soft_overlong", in_process=True)
def soft_overlong_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Completion],
    max_completion_len: int | None = None,
    soft_punish_cache: int | None = None,
    penalty_factor: float = 1.0,
    completion_ids: Sequence[Sequence[int]] | None = None,
    **kwargs: Any,
) -> list[float]:
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, Eq. 13), for n completion tokens:

        0                                              n <= L_max - L_cache
        ((L_max - L_cache) - n) / L_cache * factor     L_max - L_cache < n <= L_max
        -factor                                        n > L_max

    with L_max = ``max_completion_len``, L_cache = ``soft_punish_cache`` and factor = ``penalty_factor``.
    A linear ramp from 0 to -factor over the last L_cache tokens, so a long answer is nudged shorter
    before it is cut off. n is ``len(completion_ids[i])``, the sampled tokens the driver passes.

    Same as TRL's ``get_soft_overlong_punishment(max_completion_len, soft_punish_cache)``
    (``trl/rewards/other_rewards.py:83-138``) with factor 1, and as verl's DAPO ``overlong_buffer``
    (``verl/workers/reward_manager/dapo.py:116-122``, ``len`` = L_cache, ``penalty_factor``) up to L_max,
    beyond which verl's ramp would keep falling (its generations never get there) and this stays at
    -factor. Set L_max to ``rollout.max_completion_tokens``; soft_punish_cache 0 gives the hard -factor
    above L_max only.

    >>> ids = [[7] * 80, [7] * 90, [7] * 100, [7] * 101]
    >>> soft_overlong_reward(None, ["", "", "", ""], completion_ids=ids, max_completion_len=100, soft_punish_cache=20)
    [0.0, -0.5, -1.0, -1.0]
    """
    if max_completion_len is None or soft_punish_cache is None:
        raise ValueError(
            "reward 'soft_overlong' needs kwargs max_completion_len (L_max, e.g. rollout.max_completion_tokens) and "
            "soft_punish_cache (L_cache, the ramp's length), e.g. {max_completion_len: 256, soft_punish_cache: 64}"
        )
    if not 0 <= soft_punish_cache <= max_completion_len:
        raise ValueError(
            f"reward 'soft_overlong': soft_punish_cache={soft_punish_cache} must be in [0, max_completion_len="
            f"{max_completion_len}]; it is the stretch before L_max over which the penalty ramps"
        )
    ids = column(completion_ids, "completion_ids", len(completions), "soft_overlong")
    expected_len = max_completion_len - soft_punish_cache
    rewards = []
    for row in ids:
        n = len(row)
        if n <= expected_len:
            rewards.append(0.0)
        elif n <= max_completion_len:
            rewards.append((expected_len - n) / soft_punish_cache * penalty_factor)
        else:
            rewards.append(-float(penalty_factor))
    return rewards
