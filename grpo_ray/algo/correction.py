"""Correcting for the sampler: the rollout engine is not exactly the policy the learner optimises.

The rollout engine samples from pi_sampler (its own kernels and precision, or, in one-step-off async
training, an adapter one version behind), while the loss treats the learner's pi_old as the behaviour
policy. Truncated importance sampling (TIS; Yao et al. 2025, "Your Efficient RL Framework Secretly
Brings You Off-Policy RL Training"; TRL's ``vllm_importance_sampling_correction``) weights each
token's policy loss by

    w_t = min(pi_old(y_t) / pi_sampler(y_t), cap)

which is 1 when the two agree and bounds the variance when they do not.
"""

from __future__ import annotations

import torch
from torch import Tensor

from grpo_ray.algo.stats import masked_mean


@torch.no_grad()
def truncated_importance_weights(
    old_logprobs: Tensor, sampling_logprobs: Tensor, completion_mask: Tensor, cap: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token weights [N, T] (0 on masked positions) and TRL-named metrics.

    Args:
        old_logprobs: [N, T] log pi_old of the sampled tokens, from the learner.
        sampling_logprobs: [N, T] log pi_sampler of the same tokens, reported by the rollout engine.
        completion_mask: [N, T], 1 for tokens in the loss.
        cap: the truncation, > 0 (TRL's default is 3).

    Returns:
        (weights, metrics): ``sampling/importance_sampling_ratio/{min,mean,max}`` of the untruncated
        ratio and ``sampling/logp_difference/{mean,max}`` of |log pi_old - log pi_sampler|, over
        tokens in the loss (NaN when there are none).
    """
    if old_logprobs.shape != sampling_logprobs.shape or old_logprobs.shape != completion_mask.shape:
        raise ValueError(f"shapes differ: old {tuple(old_logprobs.shape)}, sampling {tuple(sampling_logprobs.shape)}, "
                         f"mask {tuple(completion_mask.shape)}")
    if cap <= 0:
        raise ValueError(f"cap={cap}: must be > 0")
    keep = completion_mask.bool()
    mask = keep.to(old_logprobs.dtype)
    diff = (old_logprobs - sampling_logprobs.to(old_logprobs.dtype)).masked_fill(~keep, 0.0)
    ratio = torch.exp(diff)
    weights = torch.clamp(ratio, max=cap) * mask
    nan = ratio.new_tensor(float("nan"))
    active = ratio[keep]
    metrics = {
        "sampling/importance_sampling_ratio/min": active.min() if active.numel() else nan,
        "sampling/importance_sampling_ratio/mean": masked_mean(ratio, mask),
        "sampling/importance_sampling_ratio/max": active.max() if active.numel() else nan,
        "sampling/logp_difference/mean": masked_mean(diff.abs(), mask),
        "sampling/logp_difference/max": diff.abs()[keep].max() if active.numel() else nan,
    }
    return weights, metrics
