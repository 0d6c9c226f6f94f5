"""The advantage estimators (grpo, rloo, reinforce_pp_baseline) against hand-computed values and against
loop transcriptions of their reference implementations.

Std conventions under test: RLOO divides by no std at all. REINFORCE++-baseline whitens with verl's
Bessel-corrected (unbiased) variance: for centred advantages [0.5, -0.5, -0.5, 0.5] the unbiased
variance is 1/3, so they become +-0.8660 (the biased variance 1/4 would give exactly +-1).

References transcribed below, loop for loop:

- verl ``compute_rloo_outcome_advantage`` and ``compute_reinforce_plus_plus_baseline_outcome_advantage``
  (``verl/trainer/ppo/core_algos.py:422-525`` at b178a3c) with ``masked_mean`` / ``masked_var`` /
  ``masked_whiten`` (``verl/utils/torch_functional.py:287-339``);
- TRL 1.16 ``RLOOTrainer`` (``trl/trainer/rloo_trainer.py:1676-1699``), for its NaN handling.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from grpo_ray.algo import ADVANTAGE_ESTIMATORS, ADVANTAGE_SCALES, compute_advantages, compute_group_advantages, nanstd
from grpo_ray.utils.registry import UnknownNameError

pytestmark = pytest.mark.unit

NAN = float("nan")


def _close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=1e-6, rtol=0)


# ---- hand-computed ----


@pytest.mark.parametrize(
    ("rewards", "group_size", "expected"),
    [
        # {1, 0}: each row minus the other one; no std division.
        ([1.0, 0.0, 0.0, 1.0], 2, [1.0, -1.0, -1.0, 1.0]),
        # [1, 2, 3, 6]: r_i - (12 - r_i) / 3 = (4 r_i - 12) / 3, i.e. 4/3 of GRPO's unscaled [-2, -1, 0, 3].
        ([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 0.0], 4, [-8 / 3, -4 / 3, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0]),
        # [1, NaN, 0]: leave-one-out over the two scorable rows; the NaN row gets 0.
        ([1.0, NAN, 0.0, 2.0, 2.0, 2.0], 3, [1.0, 0.0, -1.0, 0.0, 0.0, 0.0]),
        # [NaN, 3]: one scorable reward, nothing to compare with: 0.
        ([NAN, 3.0, 1.0, 0.0], 2, [0.0, 0.0, 1.0, -1.0]),
    ],
)
def test_rloo_by_hand(rewards, group_size, expected):
    _close(compute_advantages(torch.tensor(rewards), group_size, estimator="rloo"), expected)


def test_rloo_is_grpo_unscaled_times_g_over_g_minus_1():
    rewards = torch.rand(5 * 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rloo = compute_advantages(rewards, 4, estimator="rloo")
    torch.testing.assert_close(rloo, compute_group_advantages(rewards, 4, scale="none") * 4 / 3)


def test_reinforce_pp_baseline_by_hand_unbiased_not_biased():
    # centred [0.5, -0.5, -0.5, 0.5], mean 0, unbiased variance 1/3: 0.5 / sqrt(1/3) = 0.8660254.
    advantages = compute_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2, estimator="reinforce_pp_baseline")
    _close(advantages, [0.8660254, -0.8660254, -0.8660254, 0.8660254])
    assert advantages[0].item() != pytest.approx(1.0, abs=1e-3)  # what the biased variance would give


def test_reinforce_pp_baseline_weighs_completions_by_their_tokens():
    # centred c = [0.5, -0.5, -0.5, 0.5] with tokens w = [1, 3, 1, 1] (W = 6):
    # mean = (0.5 - 1.5 - 0.5 + 0.5) / 6 = -1/6; deviations [2/3, -1/3, -1/3, 2/3];
    # sum w * dev^2 = (4 + 3 + 1 + 4) / 9 = 4/3; unbiased over tokens: (4/3) / 5 = 4/15, std 0.5163978.
    advantages = compute_advantages(
        torch.tensor([1.0, 0.0, 0.0, 1.0]), 2, estimator="reinforce_pp_baseline", token_counts=torch.tensor([1, 3, 1, 1])
    )
    _close(advantages, [1.2909944, -0.6454972, -0.6454972, 1.2909944])


def test_reinforce_pp_baseline_leaves_unscorable_rows_and_lone_rewards_out():
    # group 0 = [1, NaN, 0]: centred [0.5, -, -0.5]; group 1 = [5, NaN, NaN]: one scorable reward, no signal.
    # Statistics over rows 0 and 2 only, with 2 and 3 tokens (W = 5): mean (1 - 1.5) / 5 = -0.1,
    # deviations [0.6, -0.4], sum w * dev^2 = 0.72 + 0.48 = 1.2, unbiased 1.2 / 4 = 0.3, std 0.5477226.
    rewards = torch.tensor([1.0, NAN, 0.0, 5.0, NAN, NAN])
    counts = torch.tensor([2, 9, 3, 7, 1, 1])
    advantages = compute_advantages(rewards, 3, estimator="reinforce_pp_baseline", token_counts=counts)
    _close(advantages, [1.0954451, 0.0, -0.7302967, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_pp_baseline"])
def test_all_equal_rewards_give_zero_advantages(estimator):
    assert torch.equal(compute_advantages(torch.full((6,), 0.5), 3, estimator=estimator), torch.zeros(6))
    assert torch.equal(compute_advantages(torch.full((4,), NAN), 2, estimator=estimator), torch.zeros(4))


# ---- against the references, transcribed ----


def verl_rloo(scores, index):
    """verl core_algos.py:476-525, compute_rloo_outcome_advantage (outcome rewards, response_mask = 1)."""
    scores = scores.clone()
    id2score, id2mean = defaultdict(list), {}
    bsz = scores.shape[0]
    for i in range(bsz):
        id2score[index[i]].append(scores[i])
    for idx in id2score:
        if len(id2score[idx]) == 1:
            id2mean[idx] = torch.tensor(0.0)
        elif len(id2score[idx]) > 1:
            id2mean[idx] = torch.mean(torch.stack(id2score[idx]))
    for i in range(bsz):
        response_num = len(id2score[index[i]])
        if response_num > 1:
            scores[i] = scores[i] * response_num / (response_num - 1) - id2mean[index[i]] * response_num / (
                response_num - 1
            )
    return scores


def verl_masked_whiten(values, mask):
    """verl torch_functional.py:287-339: masked_mean, masked_var(unbiased=True), masked_whiten."""

    def masked_mean(v, m):
        return (v * m).sum() / (m.sum() + 1e-8)

    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    mask_sum = mask.sum()
    variance = variance * (mask_sum / (mask_sum - 1))
    return (values - mean) * torch.rsqrt(variance + 1e-8)


def verl_reinforce_pp_baseline(scores, response_mask, index):
    """verl core_algos.py:422-473, compute_reinforce_plus_plus_baseline_outcome_advantage."""
    response_length = response_mask.shape[-1]
    scores = scores.clone()
    id2score, id2mean = defaultdict(list), {}
    bsz = scores.shape[0]
    for i in range(bsz):
        id2score[index[i]].append(scores[i])
    for idx in id2score:
        if len(id2score[idx]) == 1:
            id2mean[idx] = torch.tensor(0.0)
        elif len(id2score[idx]) > 1:
            id2mean[idx] = torch.mean(torch.stack(id2score[idx]))
    for i in range(bsz):
        scores[i] = scores[i] - id2mean[index[i]]
    scores = scores.unsqueeze(-1).tile([1, response_length]) * response_mask
    return verl_masked_whiten(scores, response_mask) * response_mask


def trl_rloo(rewards, num_generations):
    """TRL 1.16 rloo_trainer.py:1676-1699 with normalize_advantages=False (its default)."""
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
    advantages = rewards - baselines.view(-1)
    return torch.nan_to_num(advantages, nan=0.0)


def _random_rewards(seed, num_groups, group_size):
    gen = torch.Generator().manual_seed(seed)
    # integer rewards so some groups tie (all equal) and others do not
    return torch.randint(0, 3, (num_groups * group_size,), generator=gen).to(torch.float64)


@pytest.mark.parametrize("group_size", [2, 4, 5])
def test_rloo_matches_verl_loop(group_size):
    rewards = _random_rewards(group_size, 6, group_size)
    index = [i // group_size for i in range(rewards.numel())]
    torch.testing.assert_close(compute_advantages(rewards, group_size, estimator="rloo"), verl_rloo(rewards, index))


@pytest.mark.parametrize("group_size", [2, 4])
def test_rloo_matches_trl_with_nan_rewards(group_size):
    rewards = _random_rewards(10 + group_size, 6, group_size)
    rewards[torch.rand(rewards.shape, generator=torch.Generator().manual_seed(1)) < 0.3] = NAN
    rewards[:group_size] = NAN  # an unscorable group
    rewards[group_size : 2 * group_size - 1] = NAN  # a group with one scorable reward
    torch.testing.assert_close(compute_advantages(rewards, group_size, estimator="rloo"), trl_rloo(rewards, group_size))


@pytest.mark.parametrize("group_size", [2, 4])
@pytest.mark.parametrize("by_tokens", [True, False])
def test_reinforce_pp_baseline_matches_verl_loop(group_size, by_tokens):
    rewards = _random_rewards(20 + group_size, 5, group_size)
    num_tokens = 6 if by_tokens else 1
    lengths = torch.randint(1, num_tokens + 1, rewards.shape, generator=torch.Generator().manual_seed(3))
    response_mask = (torch.arange(num_tokens).unsqueeze(0) < lengths.unsqueeze(1)).to(rewards.dtype)
    index = [i // group_size for i in range(rewards.numel())]
    expected = verl_reinforce_pp_baseline(rewards, response_mask, index)[:, 0]  # every token holds the row's value
    advantages = compute_advantages(
        rewards, group_size, estimator="reinforce_pp_baseline", token_counts=lengths if by_tokens else None
    )
    torch.testing.assert_close(advantages, expected)
    if by_tokens:  # the token weighting matters: per-completion whitening gives other numbers
        assert not torch.allclose(compute_advantages(rewards, group_size, estimator="reinforce_pp_baseline"), expected)


# ---- which scale goes with which estimator ----


def test_grpo_estimator_is_compute_group_advantages():
    rewards = _random_rewards(0, 4, 4)
    for scale in ADVANTAGE_SCALES:
        expected = compute_group_advantages(rewards, 4, scale=scale)
        assert torch.equal(compute_advantages(rewards, 4, estimator="grpo", scale=scale), expected)
    assert torch.equal(compute_advantages(rewards, 4), compute_group_advantages(rewards, 4, scale="group"))


@pytest.mark.parametrize("estimator", ["rloo", "reinforce_pp_baseline"])
@pytest.mark.parametrize("scale", ["group", "batch"])
def test_std_scale_on_a_self_scaling_estimator_is_a_one_line_error(estimator, scale):
    with pytest.raises(ValueError, match=f"scale='{scale}' does not apply to estimator='{estimator}'") as excinfo:
        compute_advantages(torch.tensor([1.0, 0.0]), 2, estimator=estimator, scale=scale)
    assert "\n" not in str(excinfo.value) and "use scale='none'" in str(excinfo.value)


def test_each_estimator_lists_the_scales_it_takes():
    assert {name: ADVANTAGE_ESTIMATORS.get(name).scales for name in ADVANTAGE_ESTIMATORS} == {
        "grpo": ("group", "batch", "none"),
        "reinforce_pp_baseline": ("none",),
        "rloo": ("none",),
    }


def test_unknown_estimator_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="known: grpo, reinforce_pp_baseline, rloo") as excinfo:
        compute_advantages(torch.zeros(4), 2, estimator="rlo")
    assert "did you mean 'rloo'" in str(excinfo.value)


def test_token_counts_must_be_one_per_row():
    with pytest.raises(ValueError, match=r"token_counts must be \[N\] = \[4\]"):
        compute_advantages(torch.zeros(4), 2, estimator="reinforce_pp_baseline", token_counts=torch.ones(3))


def test_token_counts_do_not_change_grpo_or_rloo():
    rewards, counts = _random_rewards(5, 3, 4), torch.arange(1, 13)
    for estimator in ("grpo", "rloo"):
        assert torch.equal(
            compute_advantages(rewards, 4, estimator=estimator, token_counts=counts),
            compute_advantages(rewards, 4, estimator=estimator),
        )


def test_whitened_advantages_have_mean_zero_and_unbiased_std_one():
    rewards = _random_rewards(7, 8, 4)
    advantages = compute_advantages(rewards, 4, estimator="reinforce_pp_baseline")
    assert advantages.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert nanstd(advantages).item() == pytest.approx(1.0, abs=1e-6)
