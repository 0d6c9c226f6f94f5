"""Prompt-length statistics, for choosing ``max_prompt_length`` before training.

Prompts longer than the limit get truncated by the trainer, which can cut the question itself;
knowing p95 and the count over the limit up front avoids that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def count_prompt_tokens(prompt: Sequence[Mapping[str, str]], tokenizer: Any) -> int:
    """Tokens in one chat prompt as the policy sees it: chat template plus generation prompt (or,
    for a prompt ending with an assistant prefix, the prefix continued, as the engines encode it)."""
    partial = bool(prompt) and prompt[-1]["role"] == "assistant"
    ids = tokenizer.apply_chat_template(
        list(prompt), add_generation_prompt=not partial, continue_final_message=partial, tokenize=True
    )
    # transformers >= 5 returns a BatchEncoding here; 4.x returned the list of ids
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    return len(ids)


def nearest_rank(sorted_values: Sequence[int], q: float) -> int:
    """The ``q`` quantile (0 < q <= 1) by nearest rank: always one of the values.

    >>> nearest_rank([1, 2, 3, 4], 0.5), nearest_rank([1, 2, 3, 4], 0.95)
    (2, 4)
    """
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def prompt_length_stats(dataset: Any, tokenizer: Any, max_prompt_tokens: int | None = None) -> dict[str, float | int]:
    """Token-length statistics of a dataset's ``prompt`` column.

    dataset: anything indexable by "prompt" giving chat prompts (a ``datasets.Dataset`` from
        ``load_prompt_dataset``, or a dict of lists).
    Returns {"count", "mean", "p50", "p95", "max"}; p50/p95 are nearest-rank (actual lengths).
    With ``max_prompt_tokens`` also "n_over_limit": prompts strictly longer than it.
    """
    lengths = sorted(count_prompt_tokens(prompt, tokenizer) for prompt in dataset["prompt"])
    if not lengths:
        raise ValueError("prompt_length_stats: the dataset has no prompts")
    stats: dict[str, float | int] = {
        "count": len(lengths),
        "mean": sum(lengths) / len(lengths),
        "p50": nearest_rank(lengths, 0.50),
        "p95": nearest_rank(lengths, 0.95),
        "max": lengths[-1],
    }
    if max_prompt_tokens is not None:
        stats["n_over_limit"] = sum(length > max_prompt_tokens for length in lengths)
    return stats
