"""Tokens out of the loss (tool outputs in a multi-turn episode) reach neither the learner's loss nor its
gradient, through the learner's own update: the shard's ``loss_mask`` folded into each micro-batch,
sampler correction, the reference KL, the aggregation.

The learner runs its real ``train_step`` on the built-in model; only DeepSpeed's engine is replaced by
a thin wrapper that records the gradient of each backward (distributed training is not what this is
about)."""

from __future__ import annotations

import copy

import pytest
import torch

from grpo_ray.config import AlgoConfig, LearnerConfig
from grpo_ray.learner.policy import PolicyLearner
from grpo_ray.wire import TrainShard

from .helpers import Float32Engine

pytestmark = pytest.mark.unit

TOOL_SPAN = slice(3, 7)  # completion positions 3..6 of every row: a tool result inside the episode


class RecordingEngine(Float32Engine):
    """Forward passes through the model; backward records the gradient; step clears it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.module, self.grads = model, model, []
        self.lr_scheduler = type("Schedule", (), {"get_last_lr": staticmethod(lambda: [0.0])})()

    def __call__(self, **kwargs):
        return self.model(**kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()
        self.grads.append({n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None})
        self.model.zero_grad()

    def step(self) -> None:
        pass


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.paths import resolve_model_path

    return AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:arithmetic-base"), dtype=torch.float32)


def _learner(model) -> PolicyLearner:
    learner = PolicyLearner.__new__(PolicyLearner)  # no process group, no DeepSpeed: see the module docstring
    learner.algo = AlgoConfig(beta=0.04, sampler_correction=True, loss_type="dapo")
    learner.cfg = LearnerConfig(micro_batch_size=2)
    learner.lora, learner.rank, learner.world_size = False, 0, 1
    learner.temperature, learner.max_completion_tokens = 1.0, 16
    learner.share_prefix, learner.device, learner.pad_id = False, torch.device("cpu"), 0
    learner.grad_accum, learner.steps_done, learner.reference = 2, 0, None
    learner.rows_per_step, learner.boundary_by_hand = 4, False
    learner.engine = RecordingEngine(model)
    return learner


def _shard() -> TrainShard:
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 400, (6,), generator=g).tolist() for _ in range(4)]
    completions = [torch.randint(3, 400, (n,), generator=g).tolist() for n in (12, 10, 9, 12)]
    masks = [[0 if TOOL_SPAN.start <= t < TOOL_SPAN.stop else 1 for t in range(len(c))] for c in completions]
    sampling = [(-torch.rand(len(c), generator=g) * 3).tolist() for c in completions]
    tokens = float(sum(map(sum, masks)))
    return TrainShard(prompts, completions, [1.0, -0.5, 0.25, -1.0], masks, tokens, 4, sampling)


def _update(model, shard: TrainShard) -> tuple[dict[str, float], list[dict[str, torch.Tensor]]]:
    learner = _learner(model)
    metrics = learner.train_step(shard)
    return metrics, learner.engine.grads


def _perturbed(shard: TrainShard, positions: slice, value: float) -> TrainShard:
    dirty = copy.deepcopy(shard)
    for row in dirty.sampling_logprobs:
        row[positions] = [value] * len(row[positions])
    return dirty


def _assert_same(a, b) -> None:
    (metrics_a, grads_a), (metrics_b, grads_b) = a, b
    for key in ("loss", "kl", "entropy", "clip_ratio/region_mean"):
        if key in metrics_a:
            assert metrics_a[key] == pytest.approx(metrics_b[key], rel=1e-6, abs=1e-9), key
    assert len(grads_a) == len(grads_b) == 2
    for ga, gb in zip(grads_a, grads_b):
        assert ga.keys() == gb.keys() and ga
        for name in ga:
            torch.testing.assert_close(ga[name], gb[name], rtol=1e-6, atol=1e-9)


def test_tool_tokens_sampling_logprobs_reach_neither_loss_nor_gradient(model) -> None:
    shard = _shard()
    clean = _update(model, shard)
    # garbage where the policy did not choose the tokens: far off, -inf and nan
    for value in (-40.0, float("-inf"), float("nan")):
        _assert_same(clean, _update(model, _perturbed(shard, TOOL_SPAN, value)))


def test_the_same_perturbation_on_the_policys_tokens_does_change_the_gradient(model) -> None:
    """The control: were the mask ignored, the test above would see this."""
    shard = _shard()
    clean_metrics, clean_grads = _update(model, shard)
    _, dirty_grads = _update(model, _perturbed(shard, slice(0, 3), -40.0))
    differs = any(not torch.allclose(clean_grads[0][n], dirty_grads[0][n]) for n in clean_grads[0])
    assert differs


def test_the_loss_counts_only_tokens_with_mask_one(model) -> None:
    """Changing which tokens are masked changes the loss: the mask reaches the aggregation."""
    shard = _shard()
    fewer = copy.deepcopy(shard)
    fewer.loss_mask = [[0] * 8 + row[8:] for row in fewer.loss_mask]
    fewer.global_num_tokens = float(sum(map(sum, fewer.loss_mask)))
    assert _update(model, shard)[0]["loss"] != pytest.approx(_update(model, fewer)[0]["loss"], rel=1e-4)
