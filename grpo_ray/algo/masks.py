"""Completion masks: which generated tokens the loss sees.

A completion is the tokens up to and including its first EOS; everything after is padding. DAPO
(Yu et al. 2025, "DAPO", arXiv:2503.14476, "overlong filtering") further drops completions cut off at
the length limit, because their reward judges an unfinished answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def completion_mask_from_eos(completion_ids: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    """1 for tokens up to and including the first EOS of each row, 0 after.

    Same rule as TRL 1.16 (``trl/trainer/grpo_trainer.py:1881-1885``): a row with no EOS keeps all
    T tokens; any of several EOS ids (e.g. ``<|im_end|>`` and ``<|endoftext|>``) ends a completion.

    Args:
        completion_ids: [N, T] int token ids.
        eos_token_id: one id or a list of ids.

    Returns:
        completion_mask [N, T], dtype long.
    """
    if completion_ids.dim() != 2:
        raise ValueError(f"completion_ids must be [N, T], got shape {tuple(completion_ids.shape)}")
    eos_ids = torch.as_tensor(eos_token_id, device=completion_ids.device).reshape(-1)
    is_eos = torch.isin(completion_ids, eos_ids)
    num_rows, num_tokens = is_eos.shape
    # argmax finds the first True; rows without EOS keep every token (index T is past the end).
    first_eos = torch.where(
        is_eos.any(dim=1),
        is_eos.int().argmax(dim=1),
        torch.full((num_rows,), num_tokens, device=completion_ids.device),
    )
    positions = torch.arange(num_tokens, device=completion_ids.device).expand(num_rows, -1)
    return (positions <= first_eos.unsqueeze(1)).long()


def mask_truncated_completions(completion_mask: Tensor, is_truncated: Tensor) -> Tensor:
    """Zero the rows of completions that hit the length limit without an EOS.

    TRL 1.16's ``mask_truncated_completions`` (``trl/trainer/grpo_trainer.py:2487-2492``); DAPO's
    overlong filtering. Those rows then contribute no tokens to any loss aggregation.

    Args:
        completion_mask: [N, T].
        is_truncated: [N] bool (e.g. vLLM ``finish_reason == "length"``).

    Returns:
        completion_mask [N, T], same dtype as the input.
    """
    if is_truncated.shape != completion_mask.shape[:1]:
        raise ValueError(
            f"is_truncated has shape {tuple(is_truncated.shape)}, expected [N] = [{completion_mask.shape[0]}]"
        )
    keep = (~is_truncated.bool()).unsqueeze(1)
    return completion_mask * keep.to(completion_mask.dtype)


def pad_completion_values(values: list[list[float]], width: int) -> Tensor:
    """[N][T_i] per-token values (sampling logprobs, a loss mask) -> [N, width] float32, 0 past each
    row's end (rows longer than ``width`` are cut).

    >>> pad_completion_values([[1.0, 2.0], [3.0]], 3)
    tensor([[1., 2., 0.],
            [3., 0., 0.]])
    """
    out = torch.zeros((len(values), width), dtype=torch.float32)
    for i, row in enumerate(values):
        row = row[:width]
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out
