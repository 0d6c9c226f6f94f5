"""Is the loss the same however a batch is split across micro-batches or data-parallel ranks?

A learner splits its N sequences into micro-batches (and ranks) and adds up their gradients. The
full-batch gradient is recovered exactly when each micro-batch normalises by the *global* count:

- dapo    with ``global_num_tokens``    (active tokens of the whole batch): split-invariant;
- dr_grpo with ``global_num_sequences`` (N of the whole batch):             split-invariant;
- grpo    with ``global_num_sequences``:                                     split-invariant.

NOT split-invariant (pinned below so nobody relies on it by accident):

- bnpo, always: it divides by the tokens of *its own* micro-batch, so a token in a short micro-batch
  weighs more than one in a long micro-batch; neither summing nor averaging recovers the full loss.
- grpo / dr_grpo / dapo with their default local counts (TRL's behaviour before its division by the
  accumulation steps): summed, they double-count; averaged, grpo and dr_grpo only agree when every
  micro-batch has the same number of rows, and dapo only when every micro-batch has the same tokens.

Which loss types are split-invariant is a property of each registry entry
(``LOSS_AGGREGATIONS.get(name).split_invariant``), checked here against the behaviour.
"""

from __future__ import annotations

import pytest
import torch

from grpo_ray.algo import LOSS_AGGREGATIONS, compute_policy_loss
from tests.unit.algo.helpers import random_batch

pytestmark = pytest.mark.unit

KWARGS = {"epsilon_low": 0.2, "epsilon_high": 0.28, "max_completion_length": 6, "beta": 0.05}
SPLITS = [(0, 4), (4, 8)]  # two micro-batches of 4 rows, with different token counts
UNEVEN_SPLITS = [(0, 3), (3, 8)]


def _grad(loss, batch):
    (grad,) = torch.autograd.grad(loss, batch.logprobs)
    return grad


def _loss(batch, loss_type, **extra):
    loss, _ = compute_policy_loss(
        batch.logprobs,
        batch.old_logprobs,
        batch.advantages,
        batch.completion_mask,
        ref_logprobs=batch.ref_logprobs,
        loss_type=loss_type,
        **KWARGS,
        **extra,
    )
    return loss


def _batch():
    batch = random_batch(seed=21, num_sequences=8, num_tokens=6)
    tokens = [batch.rows(*rows).completion_mask.sum().item() for rows in SPLITS]
    assert tokens[0] != tokens[1], "the test needs micro-batches with different token counts"
    return batch


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["dapo", "dr_grpo", "grpo"])
@pytest.mark.parametrize("splits", [SPLITS, UNEVEN_SPLITS])
def test_summed_micro_batches_with_global_counts_equal_the_full_batch(loss_type, level, splits):
    batch = _batch()
    counts = {"global_num_tokens": batch.completion_mask.sum(), "global_num_sequences": 8}
    full = _loss(batch, loss_type, importance_sampling_level=level)
    parts = sum(_loss(batch.rows(*rows), loss_type, importance_sampling_level=level, **counts) for rows in splits)
    torch.testing.assert_close(parts, full)
    torch.testing.assert_close(_grad(parts, batch), _grad(full, batch))


@pytest.mark.parametrize("combine", ["sum", "mean"])
def test_bnpo_is_not_split_invariant(combine):
    batch = _batch()
    full = _loss(batch, "bnpo")
    # Global counts are ignored by bnpo: passing them changes nothing.
    counts = {"global_num_tokens": batch.completion_mask.sum(), "global_num_sequences": 8}
    parts = [_loss(batch.rows(*rows), "bnpo", **counts) for rows in SPLITS]
    combined = sum(parts) if combine == "sum" else sum(parts) / len(parts)
    assert not torch.allclose(_grad(combined, batch), _grad(full, batch))


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_local_counts_are_not_split_invariant_when_summed(loss_type):
    batch = _batch()
    full = _loss(batch, loss_type)
    parts = sum(_loss(batch.rows(*rows), loss_type) for rows in SPLITS)
    assert not torch.allclose(_grad(parts, batch), _grad(full, batch))


def test_local_grpo_averaged_over_equal_micro_batches_matches_but_not_over_uneven_ones():
    """What TRL relies on (it divides grpo by the accumulation steps): equal row counts per micro-batch."""
    batch = _batch()
    full_grad = _grad(_loss(batch, "grpo"), batch)
    even = sum(_loss(batch.rows(*rows), "grpo") for rows in SPLITS) / 2
    uneven = sum(_loss(batch.rows(*rows), "grpo") for rows in UNEVEN_SPLITS) / 2
    torch.testing.assert_close(_grad(even, batch), full_grad)
    assert not torch.allclose(_grad(uneven, batch), full_grad)


def test_local_dapo_averaged_over_micro_batches_differs_when_token_counts_differ():
    batch = _batch()
    averaged = sum(_loss(batch.rows(*rows), "dapo") for rows in SPLITS) / 2
    assert not torch.allclose(_grad(averaged, batch), _grad(_loss(batch, "dapo"), batch))


@pytest.mark.parametrize("loss_type", sorted(LOSS_AGGREGATIONS))
def test_registry_split_invariant_flag_says_whether_summed_micro_batches_equal_the_full_batch(loss_type):
    """Each registered loss type carries ``split_invariant``; learners scale by it, so it must be true."""
    batch = _batch()
    counts = {"global_num_tokens": batch.completion_mask.sum(), "global_num_sequences": 8}
    full_grad = _grad(_loss(batch, loss_type), batch)
    parts = sum(_loss(batch.rows(*rows), loss_type, **counts) for rows in UNEVEN_SPLITS)
    summed_equals_full = torch.allclose(_grad(parts, batch), full_grad)
    assert LOSS_AGGREGATIONS.get(loss_type).split_invariant is summed_equals_full
