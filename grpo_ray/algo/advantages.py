"""Group-relative advantages (GRPO) and the group statistics that go with them.

GRPO (Shao et al. 2024, "DeepSeekMath", arXiv:2402.03300) replaces PPO's learned value baseline with
the mean reward of G completions sampled for the same prompt: A_i = (r_i - mean(r_group)) / scale.
The scale is chosen by name from ``ADVANTAGE_SCALES``:

- ``"group"``: the group's std, as in the GRPO paper;
- ``"batch"``: the std of the whole batch, still centred per group, so a group with a tiny spread is
  not blown up (the "PPO Lite" recommendation, arXiv:2508.08221, as cited by TRL's ``scale_rewards``);
- ``"none"``: no division, the Dr. GRPO recommendation (Liu et al. 2025, "Understanding R1-Zero-Like
  Training", arXiv:2503.20783), because std scaling up-weights prompts that are too easy or too hard.

Std convention: Bessel-corrected (unbiased, divides by n-1), NaN-ignoring, plus 1e-4, exactly as TRL
1.16 (``trl/trainer/grpo_trainer.py:2763-2788`` with ``nanstd`` from ``trl/trainer/utils.py:1021``).
For rewards [1, 0, 0, 1] with G=2 each group's std is sqrt(0.5) = 0.7071, not the biased 0.5.

Layout: rewards are [N] = [B*G] laid out group by group, rows 0..G-1 belonging to prompt 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from grpo_ray.algo.stats import nanstd
from grpo_ray.utils.registry import Registry

STD_EPS = 1e-4  # TRL 1.16 grpo_trainer.py:2787; keeps all-equal groups at advantage 0 instead of 0/0

# (centered [B, G], rewards [B, G]) -> scaled advantages [B, G]
AdvantageScale = Callable[[Tensor, Tensor], Tensor]
ADVANTAGE_SCALES: Registry[AdvantageScale] = Registry("advantage scale")


@ADVANTAGE_SCALES.register("group")
def _scale_by_group_std(centered: Tensor, grouped: Tensor) -> Tensor:
    return centered / (nanstd(grouped, dim=1, keepdim=True) + STD_EPS)


@ADVANTAGE_SCALES.register("batch")
def _scale_by_batch_std(centered: Tensor, grouped: Tensor) -> Tensor:
    return centered / (nanstd(grouped) + STD_EPS)


@ADVANTAGE_SCALES.register("none")
def _no_scale(centered: Tensor, grouped: Tensor) -> Tensor:
    return centered


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """Check the layout and return rewards as [B, G]; a wrong size is a one-line ValueError."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an int >= 2 (a group baseline needs two completions), got {group_size!r}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {tuple(rewards.shape)}; combine reward functions first")
    if rewards.numel() == 0 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards has {rewards.numel()} entries, not a positive multiple of group_size={group_size}; "
            "pass whole groups of G completions per prompt"
        )
    return rewards.view(-1, group_size)


def compute_group_advantages(rewards: Tensor, group_size: int, scale: str = "group") -> Tensor:
    """Group-relative advantages, GRPO (Shao et al. 2024) with Dr. GRPO's ``scale="none"`` option.

    Args:
        rewards: [N] = [B*G] float, group by group. NaN marks a completion no reward function could
            score (see ``combine_rewards``); it is left out of its group's mean and std, and its
            advantage is 0 so it does not move the policy (TRL 1.16 grpo_trainer.py:2756-2764, 2810).
        group_size: G >= 2.
        scale: name in ``ADVANTAGE_SCALES``: ``"group"`` / ``"batch"`` / ``"none"``.

    Returns:
        advantages [N], same dtype as ``rewards``: (r - group mean) / (std + 1e-4), where std is the
        Bessel-corrected (unbiased) std of the group or of the whole batch, or no division for
        ``"none"``. A group whose rewards are all equal gets advantages 0 under every scale.

    Raises:
        ValueError: group_size < 2, rewards not 1-D, or N not a multiple of G.
        UnknownNameError: unknown ``scale`` (the message lists the known ones).
    """
    scale_fn = ADVANTAGE_SCALES.get(scale)
    grouped = _grouped(rewards, group_size)
    centered = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    advantages = scale_fn(centered, grouped)
    # A group with fewer than two scorable rewards has a NaN std: no signal, so no update.
    return torch.nan_to_num(advantages, nan=0.0).reshape(-1)


def _group_std_is_zero(rewards: Tensor, group_size: int) -> Tensor:
    """[B] bool: the group's std is 0 (TRL's ``torch.isclose(std, 0)``, grpo_trainer.py:2788)."""
    std = nanstd(_grouped(rewards, group_size), dim=1)
    return torch.isclose(std, torch.zeros_like(std))


def zero_std_group_mask(rewards: Tensor, group_size: int) -> Tensor:
    """Rows worth training on: True for completions whose group has a non-zero reward spread.

    DAPO's dynamic sampling (Yu et al. 2025, "DAPO", arXiv:2503.14476) drops groups whose
    completions all got the same reward: their advantages are all 0, so they only dilute the batch.
    Groups with fewer than two scorable (non-NaN) rewards carry no signal either and are False too.

    Args:
        rewards: [N] = [B*G], group by group.
        group_size: G >= 2.

    Returns:
        bool [N]: True for every row of a group whose rewards are not all equal.
    """
    std = nanstd(_grouped(rewards, group_size), dim=1)
    has_signal = ~torch.isclose(std, torch.zeros_like(std)) & ~torch.isnan(std)
    return has_signal.repeat_interleave(group_size)


def frac_reward_zero_std(rewards: Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all equal: TRL's ``frac_reward_zero_std`` metric.

    Args:
        rewards: [N] = [B*G], group by group.
        group_size: G >= 2.

    Returns:
        A float in [0, 1]. TRL averages over rows; all groups have G rows, so that is the same number.
        For ``scale="batch"`` TRL logs the batch std's test instead; this metric is always per group,
        which is the number that says how many prompts gave no learning signal.
    """
    return _group_std_is_zero(rewards, group_size).float().mean().item()
