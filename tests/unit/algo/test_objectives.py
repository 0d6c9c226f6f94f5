"""The policy objectives (clip with delta, cispo, sapo) against hand-computed losses and gradients.

Single-token sequences with ``loss_type="dapo"`` (sum over one token each / number of tokens), so the
per-token numbers can be checked by hand. Clip range [0.8, 1.28] (epsilon_low 0.2, epsilon_high 0.28).
"""

from __future__ import annotations

import math

import pytest
import torch

from grpo_ray.algo import POLICY_OBJECTIVES, compute_policy_loss
from grpo_ray.utils.registry import UnknownNameError
from tests.unit.algo.helpers import random_batch

pytestmark = pytest.mark.unit

EPS = {"epsilon_low": 0.2, "epsilon_high": 0.28}


def _one_token(ratio: float, advantage: float, objective: str, **options):
    old = torch.tensor([[-1.0]], dtype=torch.float64)
    logprobs = (old + math.log(ratio)).requires_grad_()
    loss, metrics = compute_policy_loss(
        logprobs, old, torch.tensor([advantage], dtype=torch.float64), torch.ones(1, 1, dtype=torch.long),
        loss_type="dapo", policy_objective=objective, **EPS, **options,
    )
    (grad,) = torch.autograd.grad(loss, logprobs)
    return loss.item(), grad.item(), metrics


def test_on_policy_every_objective_has_the_policy_gradient():
    """At ratio 1 the clip, cispo and sapo gradients are all -A d(log pi): sapo's gate has slope
    4 * sigmoid'(0) = 1 there, cispo's weight is 1, nothing is clipped."""
    batch = random_batch(seed=3)
    grads = {}
    for objective in POLICY_OBJECTIVES:
        loss, _ = compute_policy_loss(
            batch.logprobs, batch.logprobs.detach(), batch.advantages, batch.completion_mask,
            loss_type="dapo", policy_objective=objective, **EPS,
        )
        (grads[objective],) = torch.autograd.grad(loss, batch.logprobs)
    mask = batch.completion_mask.double()
    expected = -batch.advantages.unsqueeze(1) * mask / mask.sum()
    for objective, grad in grads.items():
        torch.testing.assert_close(grad, expected, msg=objective)


def test_cispo_keeps_the_gradient_of_a_token_clip_would_drop():
    # ratio 2 > 1.28 with A = +1: clip zeroes the gradient; cispo weighs it by min(2, 1.5) = 1.5.
    _, clip_grad, _ = _one_token(2.0, 1.0, "clip")
    loss, grad, metrics = _one_token(2.0, 1.0, "cispo", cispo_max_ratio=1.5)
    assert clip_grad == 0.0
    assert grad == pytest.approx(-1.5)  # -sg(w) * A * d(log pi)/d(log pi)
    assert loss == pytest.approx(-1.5 * 1.0 * (-1.0 + math.log(2.0)))  # -w * A * log pi
    assert metrics["cispo_clip_ratio"].item() == 1.0
    assert not any(name.startswith("clip_ratio/") for name in metrics)


def test_cispo_below_the_cap_weighs_by_the_ratio():
    _, grad, metrics = _one_token(0.5, -2.0, "cispo", cispo_max_ratio=5.0)
    assert grad == pytest.approx(-0.5 * -2.0)
    assert metrics["cispo_clip_ratio"].item() == 0.0


@pytest.mark.parametrize(
    ("ratio", "advantage", "temperatures", "expected_loss", "expected_grad"),
    [
        # tau 1, r 1.5, A +1: loss -4 sigmoid(0.5) = -2.4898373; grad -4 s (1 - s) r = -1.4100223.
        (1.5, 1.0, {}, -2.4898373, -1.4100223),
        # tau_neg 1.05, r 1.5, A -1: loss +(4/1.05) sigmoid(0.525) = 2.3935855;
        # grad 4 s (1 - s) r with s = sigmoid(0.525) = 0.6283162: 1.4012097.
        (1.5, -1.0, {}, 2.3935855, 1.4012097),
        # tau_pos 2, r 0.5, A +1: loss -(4/2) sigmoid(-1) = -0.5378828; grad -4 s (1 - s) r = -0.3932239.
        (0.5, 1.0, {"sapo_temperature_pos": 2.0}, -0.5378828, -0.3932239),
    ],
)
def test_sapo_by_hand(ratio, advantage, temperatures, expected_loss, expected_grad):
    loss, grad, metrics = _one_token(ratio, advantage, "sapo", **temperatures)
    assert loss == pytest.approx(expected_loss, abs=1e-6)
    assert grad == pytest.approx(expected_grad, abs=1e-6)
    assert set(metrics) == {"ratio/mean", "ratio/max", "num_tokens"}


def test_delta_bounds_a_negative_advantage_token_with_a_runaway_ratio():
    # A = -1, ratio 3: plain clip loses -min(-3, -1.28) = 3 with gradient 3 (= -A r); delta 2 caps the
    # unclipped term at 2: loss -min(-2, -1.28) = 2, and the cap stops the gradient.
    plain_loss, plain_grad, _ = _one_token(3.0, -1.0, "clip")
    loss, grad, _ = _one_token(3.0, -1.0, "clip", delta=2.0)
    assert (plain_loss, plain_grad) == (pytest.approx(3.0), pytest.approx(3.0))
    assert (loss, grad) == (pytest.approx(2.0), 0.0)


def test_delta_above_the_clip_range_leaves_positive_advantages_alone():
    for ratio in (0.5, 1.1, 3.0):
        assert _one_token(ratio, 1.0, "clip", delta=2.0)[:2] == _one_token(ratio, 1.0, "clip")[:2]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"delta": 0.0}, "delta=0.0: must be > 0"),
        ({"cispo_max_ratio": -1.0}, "cispo_max_ratio=-1.0: must be > 0"),
        ({"sapo_temperature_neg": 0.0}, "sapo_temperature_neg=0.0: must be > 0"),
    ],
)
def test_non_positive_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message):
        _one_token(1.0, 1.0, "clip", **options)


def test_unknown_objective_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="known: cispo, clip, sapo") as excinfo:
        _one_token(1.0, 1.0, "cipso")
    assert "did you mean 'cispo'" in str(excinfo.value)
