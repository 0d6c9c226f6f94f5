"""Per-token policy objectives: how the importance ratio and the advantage make each token's loss.

With r the importance ratio pi_theta / pi_old (per token, or per sequence for GSPO) and A the
sequence's advantage, chosen by name from ``POLICY_OBJECTIVES``:

=========  =====================================================================  ====================
objective  per-token loss                                                         TRL 1.16 loss_type
=========  =====================================================================  ====================
clip       -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A): PPO's clip, as in      grpo, bnpo, dr_grpo,
           GRPO (Shao et al. 2024). With ``delta``, the unclipped r is             dapo (+ ``delta``)
           min(r, delta) first: two-sided clipping, which bounds the loss of a
           negative-advantage token whose ratio has run away (INTELLECT-2,
           arXiv:2505.07291).
cispo      -sg(min(r, cispo_max_ratio)) A log pi_theta: clip the importance        cispo
           weight and keep every token's gradient, instead of zeroing the
           gradient of clipped tokens (CISPO, MiniMax-M1, arXiv:2506.13585; the
           cap is ScaleRL's eps_max, arXiv:2510.13786). sg = stop-gradient.
sapo       -(4 / tau) sigmoid(tau (r - 1)) A with tau = tau_pos if A > 0 else      sapo
           tau_neg: a smooth gate in place of the hard clip, whose gradient is
           exactly the clip objective's at r = 1 and fades as r leaves 1 (SAPO,
           arXiv:2511.20347).
=========  =====================================================================  ====================

TRL's ``loss_type`` names an objective and an aggregation at once: its ``"cispo"`` is ``cispo`` here
with ``loss_type="dapo"`` (token sum over the global token count, ``grpo_trainer.py:3168-3173``), its
``"sapo"`` is ``sapo`` with ``loss_type="grpo"`` (``grpo_trainer.py:3153-3154``). Here the two are
separate switches, so any objective goes with any aggregation (``aggregation.py``).

Formulas: TRL 1.16 ``trl/trainer/grpo_trainer.py:3109-3125`` (loss), ``:3272-3286`` (metrics). One
departure: TRL's cispo cap is ``epsilon_high`` itself (an absolute ratio such as 5.0, while the clip
objective reads it as 1 + epsilon_high); here it is its own option, ``cispo_max_ratio``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from grpo_ray.algo.stats import masked_mean, masked_row_mean
from grpo_ray.utils.registry import Registry


@dataclass(frozen=True)
class ObjectiveOptions:
    """The numbers every objective may read; each objective ignores the ones that are not its own."""

    epsilon_low: float
    epsilon_high: float
    delta: float | None = None  # clip: cap on the unclipped ratio (TRL's GRPOConfig.delta); None = off
    cispo_max_ratio: float = 5.0  # cispo: cap on the importance weight
    sapo_temperature_pos: float = 1.0  # sapo: gate temperature for A > 0 (TRL's default)
    sapo_temperature_neg: float = 1.05  # sapo: for A <= 0 (TRL's default)

    def __post_init__(self) -> None:
        positive = {
            "cispo_max_ratio": self.cispo_max_ratio,
            "sapo_temperature_pos": self.sapo_temperature_pos,
            "sapo_temperature_neg": self.sapo_temperature_neg,
        }
        if self.delta is not None:
            positive["delta"] = self.delta
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name}={value}: must be > 0")


@dataclass(frozen=True)
class PolicyObjective:
    """A registered objective.

    Attributes:
        loss: (ratio [N, T] or [N, 1], logprobs [N, T], advantages [N, 1], options) -> per-token
            loss, [N, T] or [N, 1]; before masking and aggregation.
        metrics: (ratio detached, advantages [N, 1], mask [N, T], options) -> TRL-named scalars.
    """

    loss: Callable[[Tensor, Tensor, Tensor, ObjectiveOptions], Tensor]
    metrics: Callable[[Tensor, Tensor, Tensor, ObjectiveOptions], dict[str, Tensor]]


POLICY_OBJECTIVES: Registry[PolicyObjective] = Registry("policy_objective")


def _unclipped_ratio(ratio: Tensor, options: ObjectiveOptions) -> Tensor:
    # TRL 1.16 grpo_trainer.py:3115-3116: the cap applies to coef_1 after coef_2 is clipped from it.
    return ratio if options.delta is None else torch.clamp(ratio, max=options.delta)


def _clip_loss(ratio: Tensor, logprobs: Tensor, advantages: Tensor, options: ObjectiveOptions) -> Tensor:
    clipped = torch.clamp(ratio, 1 - options.epsilon_low, 1 + options.epsilon_high)
    unclipped = _unclipped_ratio(ratio, options)
    return -torch.min(unclipped * advantages, clipped * advantages)


@torch.no_grad()
def _clip_metrics(ratio: Tensor, advantages: Tensor, mask: Tensor, options: ObjectiveOptions) -> dict[str, Tensor]:
    """TRL 1.16's clip metrics (grpo_trainer.py:3272-3283), on the ratio after the delta cap as TRL."""
    ratio = _unclipped_ratio(ratio, options)
    # Only clipping that zeroes the gradient counts: a low ratio with A > 0 is not clipped by min().
    is_low = ((ratio < 1 - options.epsilon_low) & (advantages < 0)).to(mask.dtype)
    is_high = ((ratio > 1 + options.epsilon_high) & (advantages > 0)).to(mask.dtype)
    is_region = torch.maximum(is_low, is_high)
    return {
        "clip_ratio/low_mean": masked_mean(is_low, mask),
        "clip_ratio/high_mean": masked_mean(is_high, mask),
        "clip_ratio/region_mean": masked_mean(is_region, mask),
        "clip_ratio/low_min": nan_reduce(masked_row_mean(is_low, mask), torch.min),
        "clip_ratio/high_max": nan_reduce(masked_row_mean(is_high, mask), torch.max),
    }


def _cispo_loss(ratio: Tensor, logprobs: Tensor, advantages: Tensor, options: ObjectiveOptions) -> Tensor:
    # TRL 1.16 grpo_trainer.py:3109-3111. The weight is detached, so the gradient is
    # -w * A * grad(log pi_theta) on every token, clipped or not.
    weight = torch.clamp(ratio, max=options.cispo_max_ratio).detach()
    return -weight * advantages * logprobs


@torch.no_grad()
def _cispo_metrics(ratio: Tensor, advantages: Tensor, mask: Tensor, options: ObjectiveOptions) -> dict[str, Tensor]:
    """TRL 1.16's ``cispo_clip_ratio`` (grpo_trainer.py:3284-3286): capped tokens with A > 0, as TRL counts."""
    is_capped = ((ratio > options.cispo_max_ratio) & (advantages > 0)).to(mask.dtype)
    return {"cispo_clip_ratio": masked_mean(is_capped, mask)}


def _sapo_loss(ratio: Tensor, logprobs: Tensor, advantages: Tensor, options: ObjectiveOptions) -> Tensor:
    # TRL 1.16 grpo_trainer.py:3121-3124.
    temperatures = torch.where(
        advantages > 0,
        torch.as_tensor(options.sapo_temperature_pos, dtype=ratio.dtype, device=ratio.device),
        torch.as_tensor(options.sapo_temperature_neg, dtype=ratio.dtype, device=ratio.device),
    )
    gate = torch.sigmoid(temperatures * (ratio - 1)) * 4 / temperatures
    return -gate * advantages


def _no_metrics(ratio: Tensor, advantages: Tensor, mask: Tensor, options: ObjectiveOptions) -> dict[str, Tensor]:
    return {}  # TRL logs nothing objective-specific for sapo; ratio/* and kl come from compute_policy_loss


POLICY_OBJECTIVES.register("clip")(PolicyObjective(_clip_loss, _clip_metrics))
POLICY_OBJECTIVES.register("cispo")(PolicyObjective(_cispo_loss, _cispo_metrics))
POLICY_OBJECTIVES.register("sapo")(PolicyObjective(_sapo_loss, _no_metrics))


def nan_reduce(values: Tensor, reduce: Callable[[Tensor], Tensor]) -> Tensor:
    """min/max over non-NaN entries; NaN when there are none (TRL's ``nanmin``/``nanmax``)."""
    finite = values[~torch.isnan(values)]
    return reduce(finite) if finite.numel() else values.new_tensor(float("nan"))
