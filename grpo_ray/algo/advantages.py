"""Advantages from the rewards of G completions per prompt, and the group statistics that go with them.

An advantage estimator, chosen by name from ``ADVANTAGE_ESTIMATORS``, turns the rewards of each group
into one advantage per completion; none needs a learned value model:

- ``"grpo"``: A_i = (r_i - mean(r_group)) / scale, the scale chosen by ``scale`` (below). GRPO (Shao et
  al. 2024, "DeepSeekMath", arXiv:2402.03300).
- ``"rloo"``: A_i = r_i - mean of the *other* G-1 rewards of the group (RLOO, Ahmadian et al. 2024,
  "Back to Basics", arXiv:2402.14740). Equal to G/(G-1) times GRPO's unscaled advantage, so a std
  scale on top would only change the step size: it takes ``scale="none"`` only.
- ``"reinforce_pp_baseline"``: the group mean subtracted, then whitened (mean 0, std 1) over every
  completion token of the batch (REINFORCE++-baseline, Hu 2025, arXiv:2501.03262). The whitening is
  its scale, so it takes ``scale="none"`` only.

``compute_advantages`` picks the estimator; ``compute_group_advantages`` is the ``"grpo"`` one.
For GRPO the scale is chosen by name from ``ADVANTAGE_SCALES``:

- ``"group"``: the group's std, as in the GRPO paper;
- ``"batch"``: the std of the whole batch, still centred per group, so a group with a tiny spread is
  not blown up (the "PPO Lite" recommendation, arXiv:2508.08221, as cited by TRL's ``scale_rewards``);
- ``"none"``: no division, the Dr. GRPO recommendation (Liu et al. 2025, "Understanding R1-Zero-Like
  Training", arXiv:2503.20783), because std scaling up-weights prompts that are too easy or too hard.

Std convention for GRPO: Bessel-corrected (unbiased, divides by n-1), NaN-ignoring, plus 1e-4,
exactly as TRL 1.16 (``trl/trainer/grpo_trainer.py:2763-2788`` with ``nanstd`` from
``trl/trainer/utils.py:1021``). For rewards [1, 0, 0, 1] with G=2 each group's std is
sqrt(0.5) = 0.7071, not the biased 0.5. REINFORCE++-baseline's whitening follows verl instead:
token-weighted, Bessel-corrected over the token count, ``rsqrt(var + 1e-8)``.

NaN rewards (completions no reward function could score) are left out of every baseline and
statistic and get advantage 0; so does every row of a group with fewer than two scorable rewards,
which has nothing to compare against.

Layout: rewards are [N] = [B*G] laid out group by group, rows 0..G-1 belonging to prompt 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


# (rewards [B, G] with NaN where unscorable, scale name, tokens per completion [B, G] or None)
#   -> advantages [B, G]; NaN entries become 0 afterwards.
EstimateFn = Callable[[Tensor, str, "Tensor | None"], Tensor]


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered estimator: its function and the ``scale`` values that mean something with it."""

    estimate: EstimateFn
    scales: tuple[str, ...]  # the first is the default
    uses_token_counts: bool = False


ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")


def _estimate_grpo(grouped: Tensor, scale: str, token_counts: Tensor | None) -> Tensor:
    centered = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    return ADVANTAGE_SCALES.get(scale)(centered, grouped)


def _scorable_counts(grouped: Tensor) -> Tensor:
    return (~torch.isnan(grouped)).sum(dim=1, keepdim=True)


def _estimate_rloo(grouped: Tensor, scale: str, token_counts: Tensor | None) -> Tensor:
    # Leave-one-out over the scorable siblings only, as TRL 1.16's RLOOTrainer does
    # (trl/trainer/rloo_trainer.py:1682-1690): (sum of the group - r_i) / (scorable count - 1).
    count = _scorable_counts(grouped)
    others = (torch.nansum(grouped, dim=1, keepdim=True) - grouped) / (count - 1).clamp(min=1)
    return torch.where(count > 1, grouped - others, torch.full_like(grouped, float("nan")))


def _estimate_reinforce_pp_baseline(grouped: Tensor, scale: str, token_counts: Tensor | None) -> Tensor:
    count = _scorable_counts(grouped)
    centered = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    centered = torch.where(count > 1, centered, torch.full_like(centered, float("nan")))
    # verl whitens the [N, T] tensor of per-token advantages over the response mask, so a completion
    # weighs by its tokens; without token counts every completion weighs 1.
    weights = torch.ones_like(centered) if token_counts is None else token_counts.to(centered.dtype)
    weights = weights.masked_fill(torch.isnan(centered), 0.0)
    total = weights.sum()
    if total <= 1:  # verl raises here; with nothing to measure a spread against there is no signal
        return torch.full_like(centered, float("nan"))
    values = centered.nan_to_num(0.0)
    mean = (values * weights).sum() / total
    # Bessel-corrected over the token count, as verl's masked_var
    variance = ((values - mean) ** 2 * weights).sum() / (total - 1)
    return (centered - mean) * torch.rsqrt(variance + 1e-8)


ADVANTAGE_ESTIMATORS.register("grpo")(AdvantageEstimator(_estimate_grpo, ("group", "batch", "none")))
ADVANTAGE_ESTIMATORS.register("rloo")(AdvantageEstimator(_estimate_rloo, ("none",)))
ADVANTAGE_ESTIMATORS.register("reinforce_pp_baseline")(
    AdvantageEstimator(_estimate_reinforce_pp_baseline, ("none",), uses_token_counts=True)
)


def compute_advantages(
    rewards: Tensor,
    group_size: int,
    estimator: str = "grpo",
    scale: str | None = None,
    token_counts: Tensor | None = None,
) -> Tensor:
    """Advantages [N] from rewards [N] = [B*G], by the estimator ``estimator`` (module docstring).

    References, per estimator (each tested against a loop transcription of the reference):

    - ``grpo``: TRL 1.16 ``trl/trainer/grpo_trainer.py:2766-2788, 2810``.
    - ``rloo``: verl ``compute_rloo_outcome_advantage`` (``verl/trainer/ppo/core_algos.py:476-525`` at
      b178a3c): ``r_i * n/(n-1) - mean * n/(n-1)``, which is ``r_i - (sum - r_i)/(n-1)``; OpenRLHF
      ``openrlhf/trainer/ppo_utils/experience_maker.py:264-266`` at 3c3be62; TRL 1.16
      ``trl/trainer/rloo_trainer.py:1682-1699`` with its default ``normalize_advantages=False``. None of
      them divides by a std.
    - ``reinforce_pp_baseline``: verl ``compute_reinforce_plus_plus_baseline_outcome_advantage``
      (``core_algos.py:422-473``): subtract the group mean, broadcast to tokens, then
      ``masked_whiten`` over the response mask (``verl/utils/torch_functional.py:304-339``: token mean,
      Bessel-corrected token variance, ``rsqrt(var + 1e-8)``). OpenRLHF's ``reinforce_baseline``
      (``experience_maker.py:267-268, 315-328``) whitens the same way with the biased variance.

    Args:
        rewards: [N] float, group by group; NaN where no reward function could score a completion.
        group_size: G >= 2.
        estimator: name in ``ADVANTAGE_ESTIMATORS``: ``"grpo"``, ``"rloo"``, ``"reinforce_pp_baseline"``.
        scale: for ``"grpo"`` a name in ``ADVANTAGE_SCALES`` (default ``"group"``); the other estimators
            scale themselves and take only ``"none"`` (the default for them).
        token_counts: [N] completion tokens per row, used by ``"reinforce_pp_baseline"`` to weigh each
            completion by its tokens as verl and OpenRLHF do; None weighs every completion 1. Ignored by
            the other estimators.

    Returns:
        advantages [N], same dtype as ``rewards``; 0 for NaN rewards and for groups with fewer than two
        scorable rewards.

    Raises:
        ValueError: bad layout (see ``compute_group_advantages``), a ``scale`` the estimator does not take,
            or ``token_counts`` not [N].
        UnknownNameError: unknown ``estimator`` or ``scale`` (the message lists the known ones).
    """
    entry = ADVANTAGE_ESTIMATORS.get(estimator)
    scale = entry.scales[0] if scale is None else scale
    ADVANTAGE_SCALES.get(scale)  # an unknown name lists the known ones before the pairing is checked
    if scale not in entry.scales:
        raise ValueError(
            f"scale={scale!r} does not apply to estimator={estimator!r}, which scales its own advantages; "
            f"use scale={entry.scales[0]!r}"
        )
    grouped = _grouped(rewards, group_size)
    counts = None
    if token_counts is not None and entry.uses_token_counts:
        if token_counts.shape != rewards.shape:
            raise ValueError(f"token_counts must be [N] = [{rewards.numel()}], got shape {tuple(token_counts.shape)}")
        counts = token_counts.to(rewards.device).view(-1, group_size)
    advantages = entry.estimate(grouped, scale, counts)
    # NaN marks no signal (unscorable row, or a group with < 2 scorable rewards): no update.
    return torch.nan_to_num(advantages, nan=0.0).reshape(-1)


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
    return compute_advantages(rewards, group_size, estimator="grpo", scale=scale)


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
