"""An update whose loss is nan is refused: the learner's real ``train_step`` on the built-in model, with
DeepSpeed's engine replaced by one that accumulates as DeepSpeed does (``helpers.AccumulatingEngine``).
Under ZeRO-0 in float32 the optimizer is torch's own, which would apply the gradient: the learner drops
it and tells DeepSpeed the micro-batch is inside the accumulation, so DeepSpeed's step neither clips
nor steps, and its count of micro-batches stays in step with the updates. (DeepSpeed's own skip, under ZeRO-2, and the proof that a refused update
leaves nothing in the optimizer: tests/integration/test_learner_dp.py.)"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from grpo_ray.config import AlgoConfig, LearnerConfig
from grpo_ray.errors import NonFiniteUpdate

from .helpers import bare_learner, load_tiny_model, uneven_shard

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model():
    return load_tiny_model()


def test_a_nan_loss_leaves_the_optimizer_no_gradient_and_raises(model):
    learner = bare_learner(model, LearnerConfig(micro_batch_size=4), AlgoConfig(beta=0.0), rows=8)
    good = uneven_shard()
    learner.train_step(good)
    assert learner.engine.step_grads[-1], "a finite update steps on the gradients"
    poisoned = list(good.advantages)
    poisoned[5] = math.nan  # one row's advantage: the second micro-batch's loss is nan
    with pytest.raises(NonFiniteUpdate, match=r"the loss is nan on rank 0 \(learner update 2\), so the update was not applied"):
        learner.train_step(dataclasses.replace(good, advantages=poisoned))
    assert len(learner.engine.step_grads) == 1  # no optimizer step
    assert all(p.grad is None for p in model.parameters())
    assert learner.steps_done == 1 and learner.engine.micro_steps == 4  # two micro-batches an update
    learner.train_step(good)  # the next update is made, at DeepSpeed's own boundary
    assert len(learner.engine.step_grads) == 2 and learner.engine.backward_at_boundary[-2:] == [False, True]
    assert all(bool(torch.isfinite(g).all()) for g in learner.engine.step_grads[-1].values())
