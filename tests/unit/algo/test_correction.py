"""Truncated importance weights for the sampler/learner gap, by hand, and inside the policy loss."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_ray.algo import compute_policy_loss, truncated_importance_weights

pytestmark = pytest.mark.unit


def test_weights_and_metrics_by_hand() -> None:
    old = torch.tensor([[math.log(0.5), math.log(0.2), 0.0], [math.log(0.9), 0.0, 0.0]])
    sampled = torch.tensor([[math.log(0.25), math.log(0.4), 5.0], [math.log(0.1), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    w, m = truncated_importance_weights(old, sampled, mask, cap=3.0)
    # ratios 2.0, 0.5, (masked), 9.0 -> capped at 3
    assert torch.allclose(w, torch.tensor([[2.0, 0.5, 0.0], [3.0, 0.0, 0.0]]))
    assert m["sampling/importance_sampling_ratio/min"].item() == pytest.approx(0.5)
    assert m["sampling/importance_sampling_ratio/max"].item() == pytest.approx(9.0)
    assert m["sampling/importance_sampling_ratio/mean"].item() == pytest.approx((2.0 + 0.5 + 9.0) / 3)
    diffs = [math.log(2.0), math.log(2.0), math.log(9.0)]
    assert m["sampling/logp_difference/mean"].item() == pytest.approx(sum(diffs) / 3)
    assert m["sampling/logp_difference/max"].item() == pytest.approx(math.log(9.0))


def test_equal_policies_change_nothing_and_weights_scale_the_policy_term() -> None:
    torch.manual_seed(0)
    logprobs = torch.randn(4, 5, requires_grad=True)
    mask = torch.ones(4, 5)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    kw = dict(loss_type="dapo", epsilon_low=0.2, epsilon_high=0.2)
    plain, _ = compute_policy_loss(logprobs, logprobs.detach(), adv, mask, **kw)
    w, m = truncated_importance_weights(logprobs.detach(), logprobs.detach(), mask, cap=3.0)
    assert torch.equal(w, mask) and m["sampling/logp_difference/max"].item() == 0.0
    same, _ = compute_policy_loss(logprobs, logprobs.detach(), adv, mask, token_weights=w, **kw)
    assert same.item() == pytest.approx(plain.item())
    doubled, _ = compute_policy_loss(logprobs, logprobs.detach(), adv, mask, token_weights=2 * w, **kw)
    assert doubled.item() == pytest.approx(2 * plain.item())


def test_bad_inputs() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        truncated_importance_weights(x, torch.zeros(2, 4), torch.ones(2, 3), 2.0)
    with pytest.raises(ValueError, match="cap"):
        truncated_importance_weights(x, x, torch.ones(2, 3), 0.0)
