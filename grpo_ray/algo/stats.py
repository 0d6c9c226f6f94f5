"""NaN-aware and mask-aware reductions shared by the algorithm modules.

Reward functions report "not applicable" as NaN, and completions are padded to a common length, so
almost every statistic in GRPO is either a NaN-ignoring or a mask-weighted reduction. Keeping them in
one place means the advantage baseline, the logged metrics and the loss agree on what is counted.
"""

from __future__ import annotations

import torch
from torch import Tensor


def nanstd(values: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Bessel-corrected (unbiased, ``/(n-1)``) standard deviation that ignores NaN entries.

    Same convention as ``torch.std``'s default and as TRL 1.16's ``nanstd``
    (``trl/trainer/utils.py:1021-1054``): fewer than two non-NaN values give NaN, not 0.
    """
    mean = torch.nanmean(values, dim=dim, keepdim=True)
    count = (~torch.isnan(values)).sum(dim=dim, keepdim=True)
    sq_sum = torch.nansum((values - mean) ** 2, dim=dim, keepdim=True)
    # count - 1 is 0 or negative for a single value: report NaN rather than a misleading 0 spread.
    variance = torch.where(count > 1, sq_sum / (count - 1).clamp(min=1), torch.full_like(sq_sum, float("nan")))
    std = variance.sqrt()
    if keepdim:
        return std
    return std.squeeze() if dim is None else std.squeeze(dim)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1; 0 when the mask is empty.

    ``values`` [N, T] is averaged over the mask's 1s. ``values`` [N, 1] holds one value per sequence
    (sequence-level importance sampling) and is averaged over all N rows, as TRL 1.16 does in
    ``global_masked_mean`` (``trl/trainer/grpo_trainer.py:3259-3265``).
    """
    if values.shape[-1] == 1 and mask.shape[-1] != 1:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_row_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence mean [N] of ``values`` [N, T] (or [N, 1], returned as is) over ``mask`` [N, T].

    Rows with an empty mask give NaN, so ``nanmin``/``nanmax`` over rows skip them (TRL 1.16
    ``masked_seq_mean``, ``trl/trainer/grpo_trainer.py:3254-3257``).
    """
    if values.shape[-1] == 1 and mask.shape[-1] != 1:
        return values.squeeze(-1)
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1)
