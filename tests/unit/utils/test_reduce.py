"""Metrics joined by what they are: maxima by max, minima by min, counts summed, means token-weighted."""

from __future__ import annotations

import math

import pytest

from grpo_ray.utils.reduce import reduce_named, reduction

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name, kind", [
    ("ratio/max", "max"), ("clip_ratio/high_max", "max"), ("sampling/importance_sampling_ratio/max", "max"),
    ("clip_ratio/low_min", "min"), ("timing/learner_step", "max"), ("generate_s", "max"),
    ("num_tokens", "sum"), ("completion_tokens", "sum"), ("loss", "sum"), ("faults/rollout_shards_resent", "sum"),
    ("kl", "mean"), ("entropy", "mean"), ("clip_ratio/region_mean", "mean"),
])
def test_each_name_has_its_kind(name, kind) -> None:
    assert reduction(name) == kind


def test_ranks_with_different_token_counts() -> None:
    """Two learner ranks: the max of maxima (not their mean), the token-weighted kl, summed loss shares."""
    ranks = [{"ratio/max": 1.3, "clip_ratio/low_min": 0.9, "kl": 0.2, "loss": 0.25, "num_tokens": 30.0},
             {"ratio/max": 2.1, "clip_ratio/low_min": 0.7, "kl": 0.6, "loss": 0.5, "num_tokens": 10.0}]
    out = reduce_named(ranks, weights=[30.0, 10.0])
    assert out["ratio/max"] == 2.1 and out["clip_ratio/low_min"] == 0.7
    assert out["kl"] == pytest.approx((0.2 * 30 + 0.6 * 10) / 40) and out["loss"] == 0.75 and out["num_tokens"] == 40.0


def test_nan_and_missing_values_are_skipped() -> None:
    out = reduce_named([{"kl": math.nan, "ratio/max": 1.0}, {"kl": 0.4}])
    assert out == {"kl": 0.4, "ratio/max": 1.0}
    assert math.isnan(reduce_named([{"kl": math.nan}])["kl"])
