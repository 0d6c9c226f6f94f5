"""The learner scales each micro-batch loss by what the loss_type's registry entry says about splitting.

DeepSpeed averages gradients over accumulation steps and ranks. A split-invariant aggregation already
sums to the global loss, so its micro-batch losses are multiplied back by steps x ranks; a local one
(bnpo) keeps the average. The learner reads that from ``LOSS_AGGREGATIONS``, never from a list of its own.
"""

from __future__ import annotations

import pytest

from grpo_ray.algo import LOSS_AGGREGATIONS
from grpo_ray.algo.aggregation import LossAggregation, aggregate_bnpo, aggregate_dapo
from grpo_ray.learner.policy import loss_scales

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("loss_type", sorted(LOSS_AGGREGATIONS))
def test_scales_follow_the_registry(loss_type):
    backward, reported = loss_scales(loss_type, grad_accum=4, world_size=2)
    if LOSS_AGGREGATIONS.get(loss_type).split_invariant:
        assert (backward, reported) == (8.0, 1.0)
    else:
        assert (backward, reported) == (1.0, 0.125)


def test_bnpo_is_the_local_one_and_the_rest_are_summed():
    assert {name: loss_scales(name, 4, 2)[0] for name in LOSS_AGGREGATIONS} == {
        "bnpo": 1.0, "dapo": 8.0, "dr_grpo": 8.0, "grpo": 8.0,
    }


@pytest.mark.parametrize("split_invariant, expected", [(True, (6.0, 1.0)), (False, (1.0, 1 / 6))])
def test_a_newly_registered_loss_type_is_scaled_by_its_own_flag(monkeypatch, split_invariant, expected):
    """A loss type the learner has never heard of: only the registry entry can tell it how to scale."""
    fn = aggregate_dapo if split_invariant else aggregate_bnpo
    monkeypatch.setitem(LOSS_AGGREGATIONS._items, "test_only", LossAggregation(fn, split_invariant))
    assert loss_scales("test_only", grad_accum=2, world_size=3) == expected


def test_a_local_loss_is_averaged_over_the_micro_batches_the_step_really_has():
    """DeepSpeed divides by the count it was built with (16); a shared learner's run has 4."""
    assert loss_scales("bnpo", grad_accum=16, world_size=1, count=4) == (4.0, 0.25)
    assert loss_scales("dapo", grad_accum=16, world_size=2, count=4) == (32.0, 1.0)  # summed: only DeepSpeed's count
