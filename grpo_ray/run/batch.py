"""From a step's scored rollouts to what the learners train on: rewards, advantages, the loss mask.

The math is ``grpo_ray.algo``'s; this module only unpacks the config and the ragged rollout lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from grpo_ray.algo import (
    combine_rewards,
    compute_advantages,
    mask_truncated_completions,
    pad_completion_values,
    zero_std_group_mask,
)
from grpo_ray.config import AlgoConfig
from grpo_ray.rewards.scorer import ScoreResult
from grpo_ray.wire import RolloutBatch


@dataclass
class StepBatch:
    rewards: torch.Tensor  # [N] weighted sum of the reward functions (NaN where none applied)
    advantages: torch.Tensor  # [N]
    loss_mask: list[list[int]]  # [N][T_i]


def combined_rewards(scores: ScoreResult) -> torch.Tensor:
    return combine_rewards(torch.tensor(scores.rewards, dtype=torch.float32), scores.weights)


def build_step_batch(scores: ScoreResult, rollouts: RolloutBatch, algo: AlgoConfig,
                     rows_in_loss: Optional[torch.Tensor] = None) -> StepBatch:
    """Rewards, advantages (``algo.advantage_estimator``) and the per-token loss mask: the engine's mask,
    with truncated completions (``algo.mask_truncated_completions``) and groups with no reward spread
    (``algo.drop_zero_std_groups``) taken out whole, and rows outside ``rows_in_loss`` [N] (bool) too."""
    g = rollouts.group_size
    rewards = combined_rewards(scores)
    lengths = torch.tensor([len(c) for c in rollouts.completion_ids], dtype=torch.float32)
    advantages = compute_advantages(rewards, g, estimator=algo.advantage_estimator, scale=algo.scale_rewards,
                                    token_counts=lengths)
    ragged = rollouts.token_loss_mask()
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    mask = pad_completion_values(ragged, width).long()
    if algo.mask_truncated_completions:
        mask = mask_truncated_completions(mask, torch.tensor(rollouts.is_truncated()))
    if algo.drop_zero_std_groups:
        mask = mask * zero_std_group_mask(rewards, g).long()[:, None]
    if rows_in_loss is not None:
        mask = mask * rows_in_loss.long()[:, None]
    loss_mask = [row[: len(r)] for row, r in zip(mask.tolist(), ragged)]
    return StepBatch(rewards, advantages, loss_mask)
