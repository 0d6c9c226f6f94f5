"""Tokens a tool or an environment inserted (loss mask 0 inside a trajectory) reach neither the loss,
nor its gradient, nor the KL and importance-weight metrics: perturbing every logprob at those
positions (policy, old, reference and sampler) changes nothing, for every objective and aggregation."""

from __future__ import annotations

import pytest
import torch

from grpo_ray.algo import compute_policy_loss, truncated_importance_weights

pytestmark = pytest.mark.unit

# 3 trajectories of 8 tokens: sampled, then a tool turn (mask 0), then sampled again; one with padding
MASK = torch.tensor([[1, 1, 0, 0, 0, 1, 1, 1],
                     [1, 0, 0, 1, 1, 1, 0, 0],
                     [1, 1, 1, 0, 0, 0, 0, 1]], dtype=torch.float32)


def loss_and_grad(perturb: float, objective: str, loss_type: str):
    g = torch.Generator().manual_seed(0)
    base = -torch.rand(3, 8, generator=g) - 0.1
    noise = perturb * torch.randn(3, 8, generator=g) * (1 - MASK)  # only at the tool tokens
    logprobs = (base + noise).requires_grad_(True)
    old = (base - 0.05 + noise).detach()
    ref = (base - 0.2 + 3 * noise).detach()
    sampler = (base - 0.1 - 2 * noise).detach()
    weights, sampler_metrics = truncated_importance_weights(old, sampler, MASK, cap=3.0)
    loss, metrics = compute_policy_loss(
        logprobs, old, torch.tensor([1.0, -0.5, 0.25]), MASK, loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.28,
        beta=0.04, ref_logprobs=ref, token_weights=weights, policy_objective=objective, max_completion_length=8,
        global_num_tokens=float(MASK.sum()), global_num_sequences=3,
    )
    loss.backward()
    return loss.detach(), logprobs.grad * MASK, {**metrics, **sampler_metrics}, logprobs.grad * (1 - MASK)


@pytest.mark.parametrize("objective", ["clip", "cispo", "sapo"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo"])
def test_tool_tokens_change_nothing(objective: str, loss_type: str) -> None:
    loss, grad, metrics, _ = loss_and_grad(0.0, objective, loss_type)
    loss_p, grad_p, metrics_p, tool_grad = loss_and_grad(5.0, objective, loss_type)
    torch.testing.assert_close(loss_p, loss, rtol=0, atol=1e-7)
    torch.testing.assert_close(grad_p, grad, rtol=0, atol=1e-7)
    assert float(tool_grad.abs().max()) == 0.0  # no gradient at the tool tokens themselves
    for key in metrics:
        if torch.isfinite(metrics[key]):
            torch.testing.assert_close(metrics_p[key], metrics[key], rtol=0, atol=1e-6, msg=key)
