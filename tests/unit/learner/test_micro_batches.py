"""Micro-batches packed to a token budget: each within the budget, every row once, and the same
optimizer-step gradient as fixed micro-batches. The learner marks the accumulation boundary itself,
and a rank with fewer micro-batches than another runs stand-ins that add nothing. Under ZeRO-3 the
ranks also agree on the module calls inside each forward.

The learner runs its real ``train_step`` on the built-in model; DeepSpeed's engine is replaced by one
that accumulates as DeepSpeed does (``helpers.AccumulatingEngine``)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from grpo_ray.config import AlgoConfig, LearnerConfig
from grpo_ray.learner import micro_batches
from grpo_ray.learner.padding import pack_by_tokens
from grpo_ray.learner.policy import deepspeed_config

from .helpers import bare_learner, load_tiny_model, uneven_shard

pytestmark = pytest.mark.unit

BUDGET = 80  # padded tokens: the 8 rows of uneven_shard make 4 micro-batches of 1 to 3 rows


@pytest.fixture(scope="module")
def model():
    return load_tiny_model()


def _padded(prompt_lens, completion_lens, rows) -> int:
    return len(rows) * (max(prompt_lens[i] for i in rows) + max(max(1, completion_lens[i]) for i in rows))


@pytest.mark.parametrize("seed", range(20))
def test_packing_keeps_every_row_once_within_the_budget(seed):
    rng = random.Random(seed)
    n, budget = rng.randint(1, 40), rng.choice([64, 200, 1000])
    prompt_lens = [rng.randint(1, 50) for _ in range(n)]
    completion_lens = [rng.randint(0, 150) for _ in range(n)]
    groups = pack_by_tokens(prompt_lens, completion_lens, budget)
    assert sorted(i for g in groups for i in g) == list(range(n))
    for rows in groups:
        assert _padded(prompt_lens, completion_lens, rows) <= budget or len(rows) == 1  # a long row goes alone
    # greedy: no two neighbouring groups would have fit together
    assert all(_padded(prompt_lens, completion_lens, a + b) > budget for a, b in itertools.pairwise(groups))


def test_packing_puts_more_short_rows_than_long_ones_in_a_micro_batch():
    groups = pack_by_tokens([4] * 6, [60, 60, 4, 4, 4, 4], 128)
    assert [sorted(g) for g in groups] == [[0, 1], [2, 3, 4, 5]]


def test_deepspeed_is_told_one_row_per_micro_batch_with_a_budget():
    fixed = deepspeed_config(LearnerConfig(micro_batch_size=4), 16, torch.float32)
    packed = deepspeed_config(LearnerConfig(micro_batch_size=4, max_tokens_per_micro_batch=4096), 16, torch.float32)
    assert (fixed["train_micro_batch_size_per_gpu"], fixed["gradient_accumulation_steps"]) == (4, 4)
    assert (packed["train_micro_batch_size_per_gpu"], packed["gradient_accumulation_steps"]) == (1, 16)


def _update(model, learner_cfg: LearnerConfig, loss_type: str = "dapo", **kwargs):
    algo = AlgoConfig(beta=0.04, loss_type=loss_type)
    learner = bare_learner(model, learner_cfg, algo, rows=8, **kwargs)
    return learner.train_step(uneven_shard()), learner.engine


def _assert_same_step(a, b) -> None:
    (metrics_a, engine_a), (metrics_b, engine_b) = a, b
    for key in ("loss", "kl", "entropy", "num_tokens"):
        assert metrics_a[key] == pytest.approx(metrics_b[key], rel=1e-5, abs=1e-8), key
    assert len(engine_a.step_grads) == len(engine_b.step_grads) == 1
    (ga,), (gb,) = engine_a.step_grads, engine_b.step_grads
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        scale = float(ga[name].abs().max()) + 1e-12
        assert float((gb[name] - ga[name]).abs().max()) / scale < 1e-4, name


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_budget_micro_batches_make_the_gradient_of_fixed_ones(model, loss_type):
    fixed = _update(model, LearnerConfig(micro_batch_size=2), loss_type)
    packed = _update(model, LearnerConfig(max_tokens_per_micro_batch=BUDGET), loss_type)
    assert fixed[1].backward_at_boundary == [False, False, False, True]  # DeepSpeed's own count
    boundaries = packed[1].backward_at_boundary
    assert len(boundaries) != 4 and boundaries == [False] * (len(boundaries) - 1) + [True]  # the learner's
    _assert_same_step(fixed, packed)


def test_stand_ins_keep_a_rank_in_step_and_add_nothing(model, monkeypatch):
    """Another rank packed two micro-batches more: this one runs two stand-ins, the last of them the
    boundary, and its gradient and metrics are those it makes alone."""
    alone = _update(model, LearnerConfig(max_tokens_per_micro_batch=BUDGET))
    monkeypatch.setattr(micro_batches, "all_ranks_max", lambda values, device: [values[0] + 2])
    in_step = _update(model, LearnerConfig(max_tokens_per_micro_batch=BUDGET), world_size=2)
    n = len(alone[1].backward_at_boundary)
    assert in_step[1].backward_at_boundary == [False] * (n + 1) + [True]
    _assert_same_step(alone, in_step)


def test_zero3_ranks_agree_on_the_calls_inside_each_forward(model, monkeypatch):
    """Under ZeRO-3 every module call gathers weights with the other ranks. Here another rank does not
    share its prompts and needs two more head chunks per micro-batch: this rank follows, running the
    decoder once per forward and two empty head chunks (forward, and the first of them again in
    backward, as every chunk but the last), and its update does not change."""
    cfg = {"max_tokens_per_micro_batch": BUDGET, "logprob_chunk_size": 8, "zero_stage": 3}
    alone = _update(model, LearnerConfig(**cfg))
    calls = {"decoder": 0, "empty_chunks": 0}
    hooks = [
        model.model.register_forward_hook(lambda *_: calls.__setitem__("decoder", calls["decoder"] + 1)),
        model.lm_head.register_forward_hook(
            lambda _m, args, _o: calls.__setitem__("empty_chunks", calls["empty_chunks"] + (args[0].shape[1] == 0))),
    ]

    def other_rank(values, device):
        return [[1, chunks + 2] for _, chunks in values] if isinstance(values[0], list) else values

    monkeypatch.setattr(micro_batches, "all_ranks_max", other_rank)
    try:
        agreed = _update(model, LearnerConfig(**cfg), world_size=2)
    finally:
        for hook in hooks:
            hook.remove()
    n = len(agreed[1].backward_at_boundary)
    forwards = 2 * n  # the reference's (beta > 0) and the policy's
    assert calls["decoder"] == forwards
    assert calls["empty_chunks"] == 2 * forwards + n  # and the policy's first empty one recomputed in backward
    _assert_same_step(alone, agreed)


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo"])
def test_a_learner_built_for_another_count_makes_the_update_of_one_built_for_this_one(model, loss_type):
    """A learner shared by several runs (grpo_ray.learner.slots) was built, and told DeepSpeed, for one
    run's micro-batch count; another run's 8 rows in 4 micro-batches of 2 make the update a learner
    built for them makes, bnpo's mean over micro-batches included."""
    built_for_it = _update(model, LearnerConfig(micro_batch_size=2), loss_type)
    algo = AlgoConfig(beta=0.04, loss_type=loss_type)
    shared = bare_learner(model, LearnerConfig(micro_batch_size=2), algo, rows=32)  # DeepSpeed told 16 micro-batches
    shared.rows_per_step, shared.boundary_by_hand = 8, True  # what configure() sets for the run
    other = shared.train_step(uneven_shard()), shared.engine
    assert other[1].gas == 16 and other[1].backward_at_boundary == [False, False, False, True]
    _assert_same_step(built_for_it, other)
