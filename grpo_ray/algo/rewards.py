"""Combining several reward functions into one scalar reward per completion.

Each reward function scores every completion; NaN means "does not apply to this sample" (e.g. a
medical-answer reward on a math prompt). The combined reward is the weighted sum of the applicable
ones, as TRL 1.16 does (``trl/trainer/grpo_trainer.py:2763-2764``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from grpo_ray.algo.stats import nanstd


def combine_rewards(rewards_per_func: Tensor, weights: Tensor | Sequence[float]) -> Tensor:
    """Weighted sum over reward functions, skipping NaN ("not applicable") entries.

    Matches TRL 1.16 ``grpo_trainer.py:2759-2764`` (``multi_objective_aggregation=
    "sum_then_normalize"``, its default): ``(rewards_per_func * weights).nansum(dim=1)``, then rows
    where *every* function returned NaN are set back to NaN. Without that, nansum would turn an
    unscorable completion into reward 0, which biases its group's baseline and gives it a spurious
    advantage; ``compute_group_advantages`` leaves NaN rows out and gives them advantage 0.

    Args:
        rewards_per_func: [N, F] float, NaN where a function does not apply.
        weights: [F] per-function weights (tensor or list of floats).

    Returns:
        rewards [N], dtype of ``rewards_per_func``.
    """
    if rewards_per_func.dim() != 2:
        raise ValueError(f"rewards_per_func must be [N, F], got shape {tuple(rewards_per_func.shape)}")
    weights = torch.as_tensor(weights, dtype=rewards_per_func.dtype, device=rewards_per_func.device)
    if weights.shape != (rewards_per_func.shape[1],):
        raise ValueError(
            f"got {weights.numel()} reward weights for {rewards_per_func.shape[1]} reward functions; "
            "give one weight per reward function"
        )
    combined = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    return combined.masked_fill(unscorable, float("nan"))


def reward_function_stats(rewards_per_func: Tensor, names: Sequence[str]) -> dict[str, float]:
    """Per-function mean and std over the samples where the function applied (non-NaN).

    Metric names are TRL's, ``rewards/<name>/mean`` and ``rewards/<name>/std``
    (``trl/trainer/grpo_trainer.py:2820-2825``); std is Bessel-corrected like TRL's ``nanstd``.
    A function that applied to no sample (or to one, for std) reports NaN.

    Args:
        rewards_per_func: [N, F] float, NaN where a function does not apply.
        names: F reward function names.

    Returns:
        {"rewards/<name>/mean": float, "rewards/<name>/std": float} for each of the F names.
    """
    if rewards_per_func.dim() != 2 or rewards_per_func.shape[1] != len(names):
        raise ValueError(
            f"rewards_per_func has shape {tuple(rewards_per_func.shape)} but {len(names)} names were given; "
            "expected [N, F] with one name per column"
        )
    stats: dict[str, float] = {}
    for column, name in enumerate(names):
        values = rewards_per_func[:, column].detach().float()
        stats[f"rewards/{name}/mean"] = torch.nanmean(values).item()
        stats[f"rewards/{name}/std"] = nanstd(values).item()
    return stats
