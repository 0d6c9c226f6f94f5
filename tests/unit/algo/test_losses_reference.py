"""compute_policy_loss against independent formulations on random batches.

- a plain-loop reference (Python loops over sequences and tokens, scalar torch ops) for every
  loss_type, importance-sampling level and KL estimator, values and gradients;
- GSPO's stop-gradient per-token form (Zheng et al. 2025) against the [N, 1] sequence ratio;
- padding garbage (inf / NaN in masked positions) reaching neither loss nor gradient.
"""

from __future__ import annotations

import pytest
import torch

from grpo_ray.algo import IMPORTANCE_SAMPLING_LEVELS, LOSS_AGGREGATIONS, compute_policy_loss
from tests.unit.algo.helpers import random_batch

pytestmark = pytest.mark.unit

EPS = {"epsilon_low": 0.2, "epsilon_high": 0.28}


def _loop_loss(batch, loss_type, level, beta, estimator, max_completion_length=7):
    """Loss and clip-region fraction by loops over sequences and tokens (scalar torch ops)."""
    num_seqs, num_tokens = batch.logprobs.shape
    eps_low, eps_high = EPS["epsilon_low"], EPS["epsilon_high"]
    seq_sums, seq_counts, clipped, clip_units = [], [], 0, 0
    for i in range(num_seqs):
        active = [t for t in range(num_tokens) if batch.completion_mask[i, t] == 1]
        log_ratios = [batch.logprobs[i, t] - batch.old_logprobs[i, t] for t in active]
        if level == "sequence":
            seq_ratio = torch.exp(sum(log_ratios, torch.zeros((), dtype=torch.float64)) / max(len(active), 1))
            clip_units += 1
            clipped += _is_clipped(seq_ratio.item(), batch.advantages[i].item(), eps_low, eps_high)
        total = 0.0
        for t, log_ratio in zip(active, log_ratios):
            ratio = seq_ratio if level == "sequence" else torch.exp(log_ratio)
            adv = batch.advantages[i]
            token_loss = -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
            if beta:
                d = batch.logprobs[i, t] - batch.ref_logprobs[i, t]
                kl = {"k1": d, "k2": d**2 / 2, "k3": torch.exp(-d) + d - 1}[estimator]
                token_loss = token_loss + beta * kl
            total = total + token_loss
            if level == "token":
                clip_units += 1
                clipped += _is_clipped(ratio.item(), adv.item(), eps_low, eps_high)
        seq_sums.append(total)
        seq_counts.append(len(active))
    all_tokens = sum(seq_counts)
    if loss_type == "grpo":
        loss = sum(s / max(c, 1) for s, c in zip(seq_sums, seq_counts)) / num_seqs
    elif loss_type in ("bnpo", "dapo"):  # dapo with no global count: this batch's tokens
        loss = sum(seq_sums) / max(all_tokens, 1)
    else:  # dr_grpo
        loss = sum(seq_sums) / (num_seqs * max_completion_length)
    return loss, clipped / clip_units


def _is_clipped(ratio, adv, eps_low, eps_high):
    return int((ratio < 1 - eps_low and adv < 0) or (ratio > 1 + eps_high and adv > 0))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize(("beta", "estimator"), [(0.0, "k3"), (0.1, "k3"), (0.2, "k1"), (0.3, "k2")])
def test_vectorised_loss_matches_loop_reference(loss_type, level, beta, estimator):
    batch = random_batch(seed=7, empty_row=True)
    loss, metrics = compute_policy_loss(
        batch.logprobs,
        batch.old_logprobs,
        batch.advantages,
        batch.completion_mask,
        loss_type=loss_type,
        beta=beta,
        ref_logprobs=batch.ref_logprobs,
        kl_estimator=estimator,
        importance_sampling_level=level,
        max_completion_length=7,
        **EPS,
    )
    (grad,) = torch.autograd.grad(loss, batch.logprobs)
    expected, clip_fraction = _loop_loss(batch, loss_type, level, beta, estimator)
    (expected_grad,) = torch.autograd.grad(expected, batch.logprobs)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)
    assert metrics["clip_ratio/region_mean"].item() == pytest.approx(clip_fraction)
    assert 0 < clip_fraction < 1  # the random batch exercises clipped and unclipped tokens


def test_gspo_matches_the_stop_gradient_form():
    """GSPO written per token as exp(logp - sg(logp) + sg(seq mean log ratio)) (Zheng et al. 2025,
    GSPO-token with equal advantages) gives the same loss and gradient as TRL's [N, 1] sequence ratio,
    which this module uses, for every aggregation."""
    batch = random_batch(seed=11)
    mask = batch.completion_mask.double()
    adv = batch.advantages.unsqueeze(1)
    for loss_type in LOSS_AGGREGATIONS:
        seq_mean = ((batch.logprobs - batch.old_logprobs) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)
        ratio = torch.exp(batch.logprobs - batch.logprobs.detach() + seq_mean.detach())  # [N, T]
        per_token = -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.28) * adv)
        expected = LOSS_AGGREGATIONS.get(loss_type)(
            per_token, mask, max_completion_length=5, global_num_tokens=None, global_num_sequences=None
        )
        loss, _ = compute_policy_loss(
            batch.logprobs,
            batch.old_logprobs,
            batch.advantages,
            batch.completion_mask,
            loss_type=loss_type,
            importance_sampling_level="sequence",
            max_completion_length=5,
            **EPS,
        )
        torch.testing.assert_close(loss, expected)
        (grad,) = torch.autograd.grad(loss, batch.logprobs)
        (expected_grad,) = torch.autograd.grad(expected, batch.logprobs)
        torch.testing.assert_close(grad, expected_grad)
        assert grad.abs().sum() > 0


def test_garbage_in_masked_positions_reaches_neither_loss_nor_gradient():
    clean = random_batch(seed=5, empty_row=True)
    dirty_logprobs = clean.logprobs.detach().clone()
    padding = clean.completion_mask == 0
    dirty_logprobs[padding] = float("-inf")
    dirty_logprobs.requires_grad_()
    dirty_old = clean.old_logprobs.masked_fill(padding, float("nan"))
    dirty_ref = clean.ref_logprobs.masked_fill(padding, float("inf"))
    for level in IMPORTANCE_SAMPLING_LEVELS:
        kwargs = {"loss_type": "dapo", "beta": 0.1, "importance_sampling_level": level, **EPS}
        expected, _ = compute_policy_loss(
            clean.logprobs,
            clean.old_logprobs,
            clean.advantages,
            clean.completion_mask,
            ref_logprobs=clean.ref_logprobs,
            **kwargs,
        )
        loss, metrics = compute_policy_loss(
            dirty_logprobs, dirty_old, clean.advantages, clean.completion_mask, ref_logprobs=dirty_ref, **kwargs
        )
        (grad,) = torch.autograd.grad(loss, dirty_logprobs)
        (expected_grad,) = torch.autograd.grad(expected, clean.logprobs)
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(grad, expected_grad)
        assert all(torch.isfinite(value) for value in metrics.values() if value.numel())
