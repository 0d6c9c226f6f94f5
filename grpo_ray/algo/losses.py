"""The policy-gradient loss of GRPO and its variants, on plain tensors.

Per token t of sequence i, with the default ``policy_objective="clip"`` (Shao et al. 2024,
"DeepSeekMath", arXiv:2402.03300; PPO's clip):

    ratio  = exp(logprobs - old_logprobs)
    loss_t = -min(ratio * A_i, clip(ratio, 1 - epsilon_low, 1 + epsilon_high) * A_i) + beta * KL_t

``epsilon_high > epsilon_low`` is DAPO's "clip-higher" (Yu et al. 2025, arXiv:2503.14476).
``importance_sampling_level="sequence"`` is GSPO (Zheng et al. 2025, "Group Sequence Policy
Optimization", arXiv:2507.18071): one ratio per sequence, exp of the masked mean token log ratio.
The first term is chosen by the ``policy_objective`` registry (``objectives.py``: clip with optional
two-sided ``delta``, cispo, sapo); the per-token losses are then reduced by the ``loss_type``
registry (``aggregation.py``).

Everything matches TRL 1.16 ``GRPOTrainer._compute_loss`` (``trl/trainer/grpo_trainer.py:3020-3290``)
for its loss types grpo, bnpo, dr_grpo, dapo, cispo and sapo and its ``delta``. TRL's vLLM
importance-sampling correction in its ``token_truncate`` mode is ``token_weights`` here (from
``correction.truncated_importance_weights``; TRL's default mode, ``sequence_mask``, is not
implemented). Left out: entropy masking (``top_entropy_quantile``), off-policy sequence masking
(``off_policy_mask_threshold``), the luspo and vespo loss types, and the KL bias correction
(``use_bias_correction_kl``, on by default in TRL, multiplies the KL term by the ratio), so with
``beta != 0`` this loss is TRL's with ``use_bias_correction_kl=False``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from grpo_ray.algo.aggregation import LOSS_AGGREGATIONS
from grpo_ray.algo.kl import KL_ESTIMATORS
from grpo_ray.algo.objectives import POLICY_OBJECTIVES, ObjectiveOptions, nan_reduce
from grpo_ray.algo.stats import masked_mean
from grpo_ray.utils.registry import Registry

# (log_ratio [N, T], mask [N, T]) -> log importance weights, [N, T] (token) or [N, 1] (sequence)
ImportanceSampling = Callable[[Tensor, Tensor], Tensor]
IMPORTANCE_SAMPLING_LEVELS: Registry[ImportanceSampling] = Registry("importance_sampling_level")


@IMPORTANCE_SAMPLING_LEVELS.register("token")
def _token_log_weights(log_ratio: Tensor, mask: Tensor) -> Tensor:
    return log_ratio


@IMPORTANCE_SAMPLING_LEVELS.register("sequence")
def _sequence_log_weights(log_ratio: Tensor, mask: Tensor) -> Tensor:
    # GSPO's length-normalised sequence ratio, kept [N, 1] as TRL does (grpo_trainer.py:3086-3088): its
    # gradient reaches every token through the mean, the same value and gradient as GSPO's stop-gradient
    # form logp - sg(logp) + sg(seq_mean) broadcast to tokens, for every aggregation.
    return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)


def _check_inputs(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    ref_logprobs: Tensor | None,
    beta: float,
) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [N, T], got shape {tuple(logprobs.shape)}")
    named = {"old_logprobs": old_logprobs, "completion_mask": completion_mask, "ref_logprobs": ref_logprobs}
    for name, tensor in named.items():
        if tensor is not None and tensor.shape != logprobs.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected logprobs' {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [N] = [{logprobs.shape[0]}], got shape {tuple(advantages.shape)}")
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError(f"beta={beta} adds a KL penalty, which needs ref_logprobs; pass them or set beta=0")


def compute_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    loss_type: str,
    epsilon_low: float,
    epsilon_high: float,
    beta: float = 0.0,
    ref_logprobs: Tensor | None = None,
    kl_estimator: str = "k3",
    importance_sampling_level: str = "token",
    max_completion_length: int | None = None,
    global_num_tokens: float | Tensor | None = None,
    global_num_sequences: int | None = None,
    token_weights: Tensor | None = None,
    policy_objective: str = "clip",
    delta: float | None = None,
    cispo_max_ratio: float = 5.0,
    sapo_temperature_pos: float = 1.0,
    sapo_temperature_neg: float = 1.05,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Policy loss (+ beta * KL) aggregated by ``loss_type``; GRPO / DAPO / Dr. GRPO / GSPO / CISPO / SAPO.

    Args:
        logprobs: [N, T] log pi_theta of the sampled tokens, with grad (N = B*G sequences).
        old_logprobs: [N, T] log pi_old from the policy that sampled (no grad). With a single update per
            batch pass ``logprobs.detach()``: the ratio is then 1 and only its gradient matters.
        advantages: [N], one per sequence (``compute_group_advantages``).
        completion_mask: [N, T], 1 for tokens in the loss. Masked positions may hold any value,
            even inf/NaN: they are zeroed before use, so they reach neither loss nor gradient.
        loss_type: name in ``LOSS_AGGREGATIONS``: grpo, bnpo, dr_grpo, dapo (see aggregation.py).
        epsilon_low, epsilon_high: clip range [1 - epsilon_low, 1 + epsilon_high] (``clip`` only).
        beta: KL penalty coefficient; != 0 needs ``ref_logprobs``.
        ref_logprobs: [N, T] log pi_ref, or None. Given with beta == 0, KL is still logged.
        kl_estimator: name in ``KL_ESTIMATORS``: k1, k2, k3 (Schulman 2020; k3 is TRL's).
        importance_sampling_level: "token" (GRPO) or "sequence" (GSPO, Zheng et al. 2025).
        max_completion_length: the generation limit; required by dr_grpo.
        global_num_tokens: active tokens of everything summed into one optimizer step (dapo).
        global_num_sequences: sequences of everything summed into one optimizer step (grpo, dr_grpo).
            Each aggregation reads the count it needs and ignores the other, so a learner can always
            pass both; see aggregation.py for which loss types are split-invariant.
        token_weights: [N, T] no-grad weights on each token's policy term (not the KL term), e.g. the
            truncated importance weights of ``correction.truncated_importance_weights``; None = 1.
        policy_objective: name in ``POLICY_OBJECTIVES``: clip, cispo, sapo (see objectives.py).
        delta: ``clip`` only: cap on the unclipped ratio, two-sided clipping (TRL's ``delta``); None = off.
        cispo_max_ratio: ``cispo`` only: cap on the detached importance weight.
        sapo_temperature_pos, sapo_temperature_neg: ``sapo`` only: gate temperatures for A > 0 and A <= 0.

    Returns:
        (loss, metrics). ``loss`` is a scalar with grad. ``metrics`` are detached scalars for this batch,
        named like TRL's: for ``clip``, ``clip_ratio/{low,high,region}_mean`` (fraction of tokens, or of
        sequences for GSPO, whose ratio is clipped in the direction that stops the gradient),
        ``clip_ratio/low_min`` and ``clip_ratio/high_max`` (over per-sequence fractions); for ``cispo``,
        ``cispo_clip_ratio``; for all, ``ratio/mean``, ``ratio/max``, ``kl`` (masked mean, when
        ``ref_logprobs`` is given) and ``num_tokens`` (to weight means across micro-batches).

    Raises:
        UnknownNameError: unknown loss_type, kl_estimator, importance_sampling_level or policy_objective.
        ValueError: shape mismatch, beta != 0 without ref_logprobs, dr_grpo without max_completion_length,
            a non-positive delta, cispo_max_ratio or sapo temperature.
    """
    aggregate = LOSS_AGGREGATIONS.get(loss_type)
    estimate_kl = KL_ESTIMATORS.get(kl_estimator)
    log_weights_of = IMPORTANCE_SAMPLING_LEVELS.get(importance_sampling_level)
    objective = POLICY_OBJECTIVES.get(policy_objective)
    options = ObjectiveOptions(
        epsilon_low=epsilon_low, epsilon_high=epsilon_high, delta=delta, cispo_max_ratio=cispo_max_ratio,
        sapo_temperature_pos=sapo_temperature_pos, sapo_temperature_neg=sapo_temperature_neg,
    )
    _check_inputs(logprobs, old_logprobs, advantages, completion_mask, ref_logprobs, beta)

    keep = completion_mask.bool()
    mask = keep.to(logprobs.dtype)
    # Padding may hold garbage (inf from -inf logits, NaN); masking after exp() would let it turn
    # 0 * inf into NaN in the forward or the backward pass, so zero it first.
    logprobs = logprobs.masked_fill(~keep, 0.0)
    old_logprobs = old_logprobs.to(logprobs.dtype).masked_fill(~keep, 0.0)
    advantages = advantages.to(logprobs.dtype).unsqueeze(1)

    ratio = torch.exp(log_weights_of(logprobs - old_logprobs, mask))  # [N, T] or [N, 1]
    per_token_loss = objective.loss(ratio, logprobs, advantages, options)
    if token_weights is not None:
        per_token_loss = per_token_loss * token_weights.to(per_token_loss.dtype).masked_fill(~keep, 0.0)

    per_token_kl = None
    if ref_logprobs is not None:
        per_token_kl = estimate_kl(logprobs, ref_logprobs.to(logprobs.dtype).masked_fill(~keep, 0.0))
        if beta != 0.0:
            per_token_loss = per_token_loss + beta * per_token_kl

    loss = aggregate(
        per_token_loss,
        mask,
        max_completion_length=max_completion_length,
        global_num_tokens=global_num_tokens,
        global_num_sequences=global_num_sequences,
    )
    metrics = {
        **objective.metrics(ratio.detach(), advantages, mask, options),
        **_ratio_metrics(ratio.detach(), mask, per_token_kl),
    }
    return loss, metrics


@torch.no_grad()
def _ratio_metrics(ratio: Tensor, mask: Tensor, per_token_kl: Tensor | None) -> dict[str, Tensor]:
    """Ratio stats, KL and the token count of one batch, whatever the objective."""
    per_position = ratio.shape == mask.shape
    active = mask.bool() if per_position else torch.ones_like(ratio, dtype=torch.bool)
    metrics = {
        "ratio/mean": masked_mean(ratio, mask),
        "ratio/max": nan_reduce(ratio.masked_fill(~active, float("nan")), torch.max),
        "num_tokens": mask.sum(),
    }
    if per_token_kl is not None:
        metrics["kl"] = masked_mean(per_token_kl.detach(), mask)
    return metrics
