"""Group advantages and group statistics against hand-computed numbers.

Std convention under test: Bessel-corrected (unbiased, /(n-1)), as TRL 1.16. For rewards [1, 0, 0, 1]
with G=2 each group is {1, 0}: mean 0.5, unbiased std sqrt(0.5) = 0.70711 (biased would be 0.5).
"""

from __future__ import annotations

import math

import pytest
import torch

from grpo_ray.algo import ADVANTAGE_SCALES, compute_group_advantages, frac_reward_zero_std, zero_std_group_mask
from grpo_ray.utils.registry import UnknownNameError

pytestmark = pytest.mark.unit

NAN = float("nan")


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        # 0.5 / (sqrt(0.5) + 1e-4); the biased std would give 0.5 / 0.5001 = 0.99980.
        ("group", [0.70700680, -0.70700680, -0.70700680, 0.70700680]),
        # batch [1, 0, 0, 1]: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3; 0.5 / (0.57735 + 1e-4).
        ("batch", [0.86587543, -0.86587543, -0.86587543, 0.86587543]),
        ("none", [0.5, -0.5, -0.5, 0.5]),
    ],
)
def test_two_groups_of_two(scale, expected):
    advantages = compute_group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=2, scale=scale)
    torch.testing.assert_close(advantages, torch.tensor(expected), atol=1e-6, rtol=0)


def test_group_std_is_unbiased_not_biased():
    advantages = compute_group_advantages(torch.tensor([1.0, 0.0]), group_size=2)
    assert advantages[0].item() == pytest.approx(0.5 / (math.sqrt(0.5) + 1e-4), abs=1e-6)
    assert advantages[0].item() != pytest.approx(0.5 / (0.5 + 1e-4), abs=1e-3)


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        # group 0 = [1, 2, 3, 6]: mean 3, centered [-2, -1, 0, 3], unbiased var 14/3, std 2.16025.
        # group 1 = [0, 0, 0, 0]: centered 0, std 0 -> 0 / 1e-4 = 0.
        ("group", [-0.92577724, -0.46288862, 0.0, 1.38866587, 0.0, 0.0, 0.0, 0.0]),
        # batch of 8: mean 1.5, squared deviations sum to 32, unbiased var 32/7, std 2.13809;
        # the centering stays per group.
        ("batch", [-0.93537060, -0.46768530, 0.0, 1.40305590, 0.0, 0.0, 0.0, 0.0]),
        ("none", [-2.0, -1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_groups_of_four(scale, expected):
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 0.0])
    advantages = compute_group_advantages(rewards, group_size=4, scale=scale)
    torch.testing.assert_close(advantages, torch.tensor(expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        # group 0 = [1, NaN, 0]: baseline and std from {1, 0} only; the unscorable row gets 0.
        ("group", [0.70700680, 0.0, -0.70700680, 0.0, 0.0, 0.0]),
        ("none", [0.5, 0.0, -0.5, 0.0, 0.0, 0.0]),
    ],
)
def test_nan_rewards_leave_the_baseline_and_get_zero_advantage(scale, expected):
    rewards = torch.tensor([1.0, NAN, 0.0, 2.0, 2.0, 2.0])
    advantages = compute_group_advantages(rewards, group_size=3, scale=scale)
    torch.testing.assert_close(advantages, torch.tensor(expected), atol=1e-6, rtol=0)


def test_group_with_one_scorable_reward_gets_zero_advantage():
    advantages = compute_group_advantages(torch.tensor([NAN, 3.0, 1.0, 0.0]), group_size=2)
    torch.testing.assert_close(advantages, torch.tensor([0.0, 0.0, 0.70700680, -0.70700680]), atol=1e-6, rtol=0)


def test_dtype_and_shape_are_kept():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    advantages = compute_group_advantages(rewards, group_size=2)
    assert advantages.dtype == torch.float64 and advantages.shape == (6,)


@pytest.mark.parametrize("group_size", [1, 0, -2, True, 2.0])
def test_group_size_below_two_is_a_one_line_error(group_size):
    with pytest.raises(ValueError, match="group_size must be an int >= 2") as excinfo:
        compute_group_advantages(torch.zeros(4), group_size=group_size)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("numel", [5, 0])
def test_rewards_not_whole_groups_is_a_one_line_error(numel):
    with pytest.raises(ValueError, match="multiple of group_size=2") as excinfo:
        compute_group_advantages(torch.zeros(numel), group_size=2)
    assert "\n" not in str(excinfo.value)


def test_two_dimensional_rewards_are_rejected():
    with pytest.raises(ValueError, match=r"1-D \[B\*G\]"):
        compute_group_advantages(torch.zeros(4, 2), group_size=2)


def test_unknown_scale_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as excinfo:
        compute_group_advantages(torch.zeros(4), group_size=2, scale="grup")
    message = str(excinfo.value)
    assert "batch, group, none" in message and "did you mean 'group'" in message
    assert ADVANTAGE_SCALES.names() == ["batch", "group", "none"]


def test_zero_std_group_mask_keeps_only_groups_with_signal():
    # groups: all equal | differ | one scorable (NaN std) | none scorable
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, NAN, 1.0, NAN, NAN])
    expected = torch.tensor([False, False, True, True, False, False, False, False])
    assert torch.equal(zero_std_group_mask(rewards, group_size=2), expected)


def test_frac_reward_zero_std_counts_groups_with_equal_rewards():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.2, 0.7])
    assert frac_reward_zero_std(rewards, group_size=2) == pytest.approx(0.5)
    assert frac_reward_zero_std(torch.tensor([0.0, 1.0, 2.0, 3.0]), group_size=4) == 0.0
