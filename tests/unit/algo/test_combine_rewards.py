"""Weighted NaN-aware reward combining and per-function reward metrics."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_ray.algo import combine_rewards, reward_function_stats

pytestmark = pytest.mark.unit

NAN = float("nan")
# rows: both apply | only "format" applies | none applies | only "correct" applies
REWARDS_PER_FUNC = torch.tensor([[1.0, 1.0], [NAN, 0.5], [NAN, NAN], [0.0, NAN]])


@pytest.mark.parametrize("weights", [[2.0, 0.5], torch.tensor([2.0, 0.5])])
def test_weighted_nansum_with_unscorable_rows_kept_nan(weights):
    combined = combine_rewards(REWARDS_PER_FUNC, weights)
    # 2*1 + 0.5*1 = 2.5 | 0.5*0.5 = 0.25 | NaN (nothing applied) | 2*0 = 0
    torch.testing.assert_close(combined, torch.tensor([2.5, 0.25, NAN, 0.0]), equal_nan=True)


def test_weight_count_must_match_function_count():
    with pytest.raises(ValueError, match="got 3 reward weights for 2 reward functions"):
        combine_rewards(REWARDS_PER_FUNC, [1.0, 1.0, 1.0])


def test_reward_function_stats_ignore_nan():
    stats = reward_function_stats(REWARDS_PER_FUNC, ["correct", "format"])
    assert set(stats) == {"rewards/correct/mean", "rewards/correct/std", "rewards/format/mean", "rewards/format/std"}
    # correct: {1, 0}: mean 0.5, unbiased std sqrt(0.5); format: {1, 0.5}: mean 0.75, std sqrt(0.125)
    assert stats["rewards/correct/mean"] == pytest.approx(0.5)
    assert stats["rewards/correct/std"] == pytest.approx(math.sqrt(0.5))
    assert stats["rewards/format/mean"] == pytest.approx(0.75)
    assert stats["rewards/format/std"] == pytest.approx(math.sqrt(0.125))


def test_reward_function_stats_of_a_function_that_applied_once():
    stats = reward_function_stats(torch.tensor([[3.0], [NAN]]), ["only_once"])
    assert stats["rewards/only_once/mean"] == 3.0 and math.isnan(stats["rewards/only_once/std"])


def test_reward_function_stats_need_one_name_per_column():
    with pytest.raises(ValueError, match="one name per column"):
        reward_function_stats(REWARDS_PER_FUNC, ["correct"])
