"""KL estimators (Schulman 2020, "Approximating KL divergence") against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from grpo_ray.algo import KL_ESTIMATORS, compute_kl
from grpo_ray.utils.registry import UnknownNameError

pytestmark = pytest.mark.unit

# Two tokens: d = logp - ref = +1 and -1, and one where the policy equals the reference (d = 0).
LOGPROBS = torch.tensor([[-1.0, -2.0, -0.5]])
REF_LOGPROBS = torch.tensor([[-2.0, -1.0, -0.5]])


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        ("k1", [1.0, -1.0, 0.0]),  # d
        ("k2", [0.5, 0.5, 0.0]),  # d^2 / 2
        # exp(-d) + d - 1: e^-1 + 1 - 1 = 0.36788 and e^1 - 1 - 1 = 0.71828
        ("k3", [0.36787944, 0.71828183, 0.0]),
    ],
)
def test_estimators_by_hand(estimator, expected):
    torch.testing.assert_close(compute_kl(LOGPROBS, REF_LOGPROBS, estimator), torch.tensor([expected]))


def test_k3_is_nonnegative_and_k1_is_not():
    gen = torch.Generator().manual_seed(0)
    logprobs, ref = -torch.rand(2, 3, 7, generator=gen) * 3
    assert (compute_kl(logprobs, ref, "k3") >= 0).all()
    assert (compute_kl(logprobs, ref, "k1") < 0).any()


def test_unknown_estimator_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="known: k1, k2, k3"):
        compute_kl(LOGPROBS, REF_LOGPROBS, "k4")
    assert KL_ESTIMATORS.names() == ["k1", "k2", "k3"]
