"""compute_policy_loss against hand-computed values, and its errors.

Hand cases use epsilon_low=0.2, epsilon_high=0.28 (DAPO clip-higher), so the clip range is [0.8, 1.28].
"""

from __future__ import annotations

import math

import pytest
import torch

from grpo_ray.algo import compute_policy_loss
from grpo_ray.utils.registry import UnknownNameError
from tests.unit.algo.helpers import random_batch

pytestmark = pytest.mark.unit

EPS = {"epsilon_low": 0.2, "epsilon_high": 0.28}
LN = math.log


def _token_case():
    """Two sequences; ratios chosen to hit each side of the clip range.

    seq 0, A=+1, mask [1,1,1], ratios [1.5, 1.0, 0.5]:
        1.5 > 1.28 with A>0 -> clipped high, loss -1.28 (no grad); 1.0 -> -1.0; 0.5 with A>0 is
        not clipped (min picks 0.5*A) -> -0.5.
    seq 1, A=-1, mask [1,1,0], ratios [0.5, 1.5, 1.0]:
        0.5 < 0.8 with A<0 -> clipped low, loss +0.8 (no grad); 1.5 with A<0 is not clipped -> +1.5;
        third token masked.
    Sum over active tokens = -2.78 + 2.3 = -0.48 over 5 tokens.
    """
    old = torch.full((2, 3), -1.0, dtype=torch.float64)
    log_ratio = torch.tensor([[LN(1.5), 0.0, LN(0.5)], [LN(0.5), LN(1.5), 0.0]], dtype=torch.float64)
    logprobs = (old + log_ratio).requires_grad_()
    advantages = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logprobs, old, advantages, mask


@pytest.mark.parametrize(
    ("loss_type", "extra", "expected"),
    [
        ("grpo", {}, 0.11166667),  # (-2.78/3 + 2.3/2) / 2
        ("bnpo", {}, -0.096),  # -0.48 / 5
        ("dr_grpo", {"max_completion_length": 4}, -0.06),  # -0.48 / (2 * 4)
        ("dapo", {}, -0.096),  # -0.48 / 5 tokens in this batch
        ("dapo", {"global_num_tokens": 12}, -0.04),  # -0.48 / 12 tokens in the global batch
    ],
)
def test_token_level_loss_by_hand(loss_type, extra, expected):
    logprobs, old, advantages, mask = _token_case()
    loss, _ = compute_policy_loss(logprobs, old, advantages, mask, loss_type=loss_type, **EPS, **extra)
    assert loss.item() == pytest.approx(expected, abs=1e-7)


def test_token_level_clip_metrics_by_hand():
    logprobs, old, advantages, mask = _token_case()
    _, metrics = compute_policy_loss(logprobs, old, advantages, mask, loss_type="grpo", **EPS)
    expected = {
        "clip_ratio/low_mean": 0.2,  # 1 of 5 active tokens
        "clip_ratio/high_mean": 0.2,  # 1 of 5
        "clip_ratio/region_mean": 0.4,
        "clip_ratio/low_min": 0.0,  # per sequence: low [0, 1/2]
        "clip_ratio/high_max": 1 / 3,  # per sequence: high [1/3, 0]
        "ratio/mean": 1.0,  # (1.5 + 1 + 0.5 + 0.5 + 1.5) / 5
        "ratio/max": 1.5,
        "num_tokens": 5.0,
    }
    assert {name: pytest.approx(value.item()) for name, value in metrics.items()} == expected
    assert all(not value.requires_grad and value.dim() == 0 for value in metrics.values())


def test_token_level_gradient_by_hand():
    logprobs, old, advantages, mask = _token_case()
    loss, _ = compute_policy_loss(logprobs, old, advantages, mask, loss_type="grpo", **EPS)
    loss.backward()
    # grpo weights token t of seq i by 1 / (|o_i| * N); unclipped grad is -A * ratio.
    # Clipped tokens and the masked token get 0.
    expected = torch.tensor([[0.0, -1.0 / 6, -0.5 / 6], [0.0, 1.5 / 4, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(logprobs.grad, expected)


def _sequence_case():
    """GSPO: one ratio per sequence, exp of the masked mean log ratio.

    seq 0, A=+1, mask [1,1,0], log ratios [ln 2, ln 2, ln 100]: the masked ln 100 must not count, so
    the ratio is 2 -> clipped high, loss -1.28 on each of its 2 tokens.
    seq 1, A=-1, mask [1,1,1], ratios 0.5 -> clipped low, loss +0.8 on each of its 3 tokens.
    """
    old = torch.full((2, 3), -2.0, dtype=torch.float64)
    log_ratio = torch.tensor([[LN(2.0), LN(2.0), LN(100.0)], [LN(0.5)] * 3], dtype=torch.float64)
    logprobs = (old + log_ratio).requires_grad_()
    return logprobs, old, torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([[1, 1, 0], [1, 1, 1]])


@pytest.mark.parametrize(
    ("loss_type", "extra", "expected"),
    [
        ("grpo", {}, -0.24),  # (-1.28 + 0.8) / 2
        ("bnpo", {}, -0.032),  # (2 * -1.28 + 3 * 0.8) / 5
        ("dr_grpo", {"max_completion_length": 4}, -0.02),  # -0.16 / 8
        ("dapo", {}, -0.032),
    ],
)
def test_sequence_level_loss_and_metrics_by_hand(loss_type, extra, expected):
    logprobs, old, advantages, mask = _sequence_case()
    loss, metrics = compute_policy_loss(
        logprobs, old, advantages, mask, loss_type=loss_type, importance_sampling_level="sequence", **EPS, **extra
    )
    assert loss.item() == pytest.approx(expected, abs=1e-7)
    # Sequence-level clip metrics count sequences, as TRL's do: one clipped low, one high.
    assert metrics["clip_ratio/low_mean"].item() == pytest.approx(0.5)
    assert metrics["clip_ratio/high_mean"].item() == pytest.approx(0.5)
    assert metrics["clip_ratio/region_mean"].item() == pytest.approx(1.0)
    assert metrics["ratio/mean"].item() == pytest.approx(1.25)  # (2 + 0.5) / 2
    loss.backward()
    assert torch.count_nonzero(logprobs.grad) == 0  # both sequences clipped: no gradient


@pytest.mark.parametrize(
    ("loss_type", "extra", "expected_grad"),
    [
        # one sequence of 3 tokens, A=+1, ratio r = 0.75 ** (1/3) = 0.908560 (inside the clip range).
        # loss -r for grpo and bnpo: each token gets -r / 3.
        ("grpo", {}, -0.30285343),
        ("bnpo", {}, -0.30285343),
        # -3r / (1 * 4): each token gets -r / 4.
        ("dr_grpo", {"max_completion_length": 4}, -0.22714007),
    ],
)
def test_sequence_level_gradient_reaches_every_token(loss_type, extra, expected_grad):
    old = torch.full((1, 3), -1.0, dtype=torch.float64)
    logprobs = (old + torch.tensor([[LN(1.5), 0.0, LN(0.5)]], dtype=torch.float64)).requires_grad_()
    loss, _ = compute_policy_loss(
        logprobs,
        old,
        torch.tensor([1.0], dtype=torch.float64),
        torch.ones(1, 3),
        loss_type=loss_type,
        importance_sampling_level="sequence",
        **EPS,
        **extra,
    )
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.full((1, 3), expected_grad, dtype=torch.float64))


@pytest.mark.parametrize(
    ("estimator", "expected_kl"),
    [
        ("k1", 0.0),  # d = [1, -1]
        ("k2", 0.5),  # [0.5, 0.5]
        ("k3", 0.54308063),  # [e^-1, e - 2] = [0.36788, 0.71828]
    ],
)
def test_kl_penalty_by_hand(estimator, expected_kl):
    # Ratio 1 and A = 0: the clipped term is 0, so the loss is beta * mean KL.
    logprobs = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-2.0, -1.0]], dtype=torch.float64)
    loss, metrics = compute_policy_loss(
        logprobs,
        logprobs.detach(),
        torch.zeros(1, dtype=torch.float64),
        torch.ones(1, 2),
        loss_type="grpo",
        beta=0.1,
        ref_logprobs=ref,
        kl_estimator=estimator,
        **EPS,
    )
    assert loss.item() == pytest.approx(0.1 * expected_kl, abs=1e-8)
    assert metrics["kl"].item() == pytest.approx(expected_kl, abs=1e-8)


def test_k3_penalty_gradient_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-2.0, -1.0]], dtype=torch.float64)
    loss, _ = compute_policy_loss(
        logprobs,
        logprobs.detach(),
        torch.zeros(1, dtype=torch.float64),
        torch.ones(1, 2),
        loss_type="grpo",
        beta=0.1,
        ref_logprobs=ref,
        **EPS,
    )
    loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp); times beta / 2 tokens: 0.05 * (1 - e^-1), 0.05 * (1 - e)
    expected = torch.tensor([[0.05 * (1 - math.exp(-1)), 0.05 * (1 - math.e)]], dtype=torch.float64)
    torch.testing.assert_close(logprobs.grad, expected)


def test_kl_is_logged_but_not_added_when_beta_is_zero():
    batch = random_batch(seed=3)
    kwargs = {"loss_type": "grpo", **EPS}
    with_ref, metrics = compute_policy_loss(
        batch.logprobs,
        batch.old_logprobs,
        batch.advantages,
        batch.completion_mask,
        ref_logprobs=batch.ref_logprobs,
        **kwargs,
    )
    without_ref, no_kl = compute_policy_loss(
        batch.logprobs, batch.old_logprobs, batch.advantages, batch.completion_mask, **kwargs
    )
    assert with_ref.item() == without_ref.item()
    assert metrics["kl"].item() > 0 and "kl" not in no_kl


# ---- errors ----


@pytest.mark.parametrize(
    ("kwargs", "known"),
    [
        ({"loss_type": "grpoo"}, "known: bnpo, dapo, dr_grpo, grpo"),
        ({"loss_type": "grpo", "kl_estimator": "k5"}, "known: k1, k2, k3"),
        ({"loss_type": "grpo", "importance_sampling_level": "seq"}, "known: sequence, token"),
    ],
)
def test_unknown_names_list_the_known_ones(kwargs, known):
    logprobs, old, advantages, mask = _token_case()
    with pytest.raises(UnknownNameError, match=known):
        compute_policy_loss(logprobs, old, advantages, mask, **EPS, **kwargs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"beta": 0.04}, "needs ref_logprobs"),
        ({"loss_type": "dr_grpo"}, "needs max_completion_length"),
        ({"advantages": torch.zeros(3)}, r"advantages must be \[N\] = \[2\]"),
        ({"completion_mask": torch.ones(2, 4)}, "completion_mask has shape"),
    ],
)
def test_user_mistakes_are_one_line_value_errors(change, message):
    logprobs, old, advantages, mask = _token_case()
    args = {"advantages": advantages, "completion_mask": mask, "loss_type": "grpo", **EPS, **change}
    with pytest.raises(ValueError, match=message) as excinfo:
        compute_policy_loss(logprobs, old, **args)
    assert "\n" not in str(excinfo.value)
