"""Data-parallel learners: two DeepSpeed ranks (gloo on CPU) make the same update as one.

Each group of learners is real Ray actors in one process group; the same global batch is split
between the ranks exactly as the driver splits it. ZeRO stages 2 and 3 shard optimizer state (and
parameters, for 3) across the ranks and must still give the single-learner update.
"""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import ray
import torch

from grpo_ray.cluster import Workers
from grpo_ray.errors import NonFiniteUpdate
from grpo_ray.wire import split_into_shards
from grpo_ray.rollout.prompting import encode_prompts

from .helpers import tiny_config

pytestmark = pytest.mark.integration

GROUP, PROMPTS = 4, 4
# ZeRO-2/3 reduce gradients in another order than one rank sums them; Adam's first step divides by
# |g|, so float32 noise reaches ~1e-6 of a step of size lr (0.03). 1e-5 is still 3e-4 of that step.
ATOL = 1e-5


@pytest.fixture(scope="module")
def local_ray(ray_cluster):
    yield


@pytest.fixture(scope="module")
def global_batch(tiny_model_dir):
    """16 rows: 4 prompts x 4 completions of uneven lengths, with fixed advantages."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    questions = [f"What is {a} + {b}?" for a, b in [(12, 30), (45, 11), (70, 29), (33, 33)]]
    prompts = encode_prompts(tok, [[{"role": "user", "content": q}] for q in questions])
    gen = torch.Generator().manual_seed(0)
    completions = [
        torch.randint(3, len(tok), (int(torch.randint(3, 15, (1,), generator=gen)),), generator=gen).tolist()
        for _ in range(PROMPTS * GROUP)
    ]
    advantages = torch.randn(PROMPTS * GROUP, generator=gen).tolist()
    return [p for p in prompts for _ in range(GROUP)], completions, advantages


def masks(completion_ids: list[list[int]]) -> list[list[int]]:
    loss_mask = [[1] * len(c) for c in completion_ids]
    loss_mask[5] = [0] * len(completion_ids[5])  # a masked row must stay masked however the batch is split
    loss_mask[2][-1] = 0  # and so must one masked token
    return loss_mask


_DONE: dict = {}  # updates already made in this module, by their settings (the single-rank references recur)


def one_update(tiny_model_dir, tmp_path, global_batch, learners: int, zero_stage: int, loss_type: str, *extra: str):
    key = (learners, zero_stage, loss_type, extra)
    if key not in _DONE:
        _DONE[key] = _one_update(tiny_model_dir, tmp_path, global_batch, learners, zero_stage, loss_type, *extra)
    return _DONE[key]


def _one_update(tiny_model_dir, tmp_path, global_batch, learners: int, zero_stage: int, loss_type: str, *extra: str):
    cfg = tiny_config(
        tiny_model_dir, tmp_path, f"learner.num_learners={learners}", f"learner.zero_stage={zero_stage}",
        "learner.micro_batch_size=4", f"algo.loss_type={loss_type}", "algo.beta=0.04", "learner.max_grad_norm=1e9",
        *extra,
    )
    workers = Workers()
    try:
        workers.start_learners(cfg)
        prompt_ids, completion_ids, advantages = global_batch
        shards = split_into_shards(prompt_ids, completion_ids, advantages, masks(completion_ids), learners)
        metrics = ray.get([w.train_step.remote(s) for w, s in zip(workers.learners, shards)])
        payloads = ray.get([w.send_weights.remote(1) for w in workers.learners])
        return payloads[0].tensors, metrics
    finally:
        workers.shutdown()


def test_two_learners_make_the_update_of_one(local_ray, tiny_model_dir, tmp_path, global_batch):
    """With grpo's per-sequence means over two ZeRO-2 ranks (dapo's token sums: the ZeRO-3 test below)."""
    single, m1 = one_update(tiny_model_dir, tmp_path, global_batch, 1, 0, "grpo")
    double, m2 = one_update(tiny_model_dir, tmp_path, global_batch, 2, 2, "grpo")
    lora_b = [k for k in single if "lora_B" in k]
    assert max(float(single[k].abs().max()) for k in lora_b) > 1e-4, "the update did nothing"
    for k in single:
        torch.testing.assert_close(double[k], single[k], rtol=1e-4, atol=ATOL, msg=k)
    # the reported loss of the global batch is the same however it was split
    assert sum(m["loss"] for m in m2) == pytest.approx(m1[0]["loss"], rel=1e-4, abs=1e-6)  # each rank reports its share


def test_zero3_makes_the_same_update(local_ray, tiny_model_dir, tmp_path, global_batch):
    reference, _ = one_update(tiny_model_dir, tmp_path, global_batch, 1, 0, "dapo")
    sharded, _ = one_update(tiny_model_dir, tmp_path, global_batch, 2, 3, "dapo")
    for k in reference:
        torch.testing.assert_close(sharded[k], reference[k], rtol=1e-4, atol=ATOL, msg=k)


def test_shared_prompt_prefix_gives_the_same_loss_and_gradient(local_ray, tiny_model_dir, tmp_path, global_batch):
    """Running each prompt once for its group (the default) gives the full forward's loss, KL, entropy
    and gradient norm through DeepSpeed. (Adam's first step is lr * sign(g) for most elements, so
    float32 noise on near-zero gradients says nothing; tests/unit/learner compares the gradients.)"""
    _, m_full = one_update(tiny_model_dir, tmp_path, global_batch, 1, 0, "dapo", "learner.share_prompt_prefix=false")
    _, m_shared = one_update(tiny_model_dir, tmp_path, global_batch, 1, 0, "dapo")
    for key in ("loss", "kl", "entropy", "grad_norm"):
        assert m_shared[0][key] == pytest.approx(m_full[0][key], rel=1e-4, abs=1e-7), key
    assert m_full[0]["grad_norm"] > 1e-3


def test_only_rank0_copies_the_full_weights_to_the_host(local_ray, tiny_model_dir, tmp_path):
    """Full fine-tuning's sync and checkpoint under ZeRO-3: rank 0 copies every weight to the host, one at
    a time; the other ranks copy none, they only join each weight's gather."""
    cfg = tiny_config(tiny_model_dir, tmp_path, "model.lora.enabled=false", "learner.num_learners=2",
                      "learner.zero_stage=3", "learner.micro_batch_size=4", "algo.beta=0")
    workers = Workers()
    try:
        workers.start_learners(cfg)
        counts = ray.get([w.__ray_call__.remote(
            lambda self: [name for name, t in self.learner.full_state() if t is not None]) for w in workers.learners])
        assert len(counts[0]) > 10 and counts[1] == []
        updates = ray.get([w.send_weights.remote(1) for w in workers.learners])
        assert updates[1] is None and updates[0].total_bytes > 0
        ray.get([w.save.remote(str(tmp_path / "ckpt"), 1) for w in workers.learners])
        assert (tmp_path / "ckpt" / "model" / "config.json").is_file()
    finally:
        workers.shutdown()


def nan_advantages(shard):
    return dataclasses.replace(shard, advantages=[math.nan] * len(shard.advantages))


def test_an_update_with_a_nan_loss_on_one_rank_is_applied_on_none(local_ray, tiny_model_dir, tmp_path, global_batch):
    """Two ZeRO-2 ranks, rank 0's loss nan: DeepSpeed's optimizer sees the non-finite gradient reduced
    over both and skips the step; both ranks raise, the weights are the last good update's, and the next
    update is made. (That the refused step leaves nothing in the optimizer: the shared learner's test below,
    under ZeRO-0, against a learner that never saw it.)"""
    cfg = tiny_config(tiny_model_dir, tmp_path, "learner.num_learners=2", "learner.zero_stage=2",
                      "learner.micro_batch_size=4", "algo.beta=0.04", "learner.max_grad_norm=1e9")
    prompt_ids, completion_ids, advantages = global_batch
    shards = split_into_shards(prompt_ids, completion_ids, advantages, masks(completion_ids), 2)
    workers = Workers()
    try:
        workers.start_learners(cfg)
        ranks = workers.learners
        ray.get([w.train_step.remote(s) for w, s in zip(ranks, shards)])
        first = ray.get(ranks[0].send_weights.remote(1)).tensors
        refused = [w.train_step.remote(s) for w, s in zip(ranks, [nan_advantages(shards[0]), shards[1]])]
        messages = []
        for ref in refused:
            with pytest.raises(NonFiniteUpdate) as err:
                ray.get(ref)
            messages.append(str(err.value.cause))
        kept = ray.get(ranks[0].send_weights.remote(1)).tensors
        metrics = ray.get([w.train_step.remote(s) for w, s in zip(ranks, shards)])
        second = ray.get(ranks[0].send_weights.remote(2)).tensors
    finally:
        workers.shutdown()
    assert "the loss is nan on rank 0" in messages[0] and "not applied" in messages[1], messages
    for k in first:
        assert torch.equal(kept[k], first[k]), k
    assert all(math.isfinite(m["grad_norm"]) and math.isfinite(m["loss"]) for m in metrics)
    assert all(bool(torch.isfinite(t).all()) for t in second.values())
    assert max(float((second[k] - first[k]).abs().max()) for k in first) > 1e-4, "the next update did nothing"


def _train(learners: list, shards: list, slot_steps: list[tuple[int, int]]) -> list:
    """Run ``(learner index, shard index)`` steps in that order; each learner's adapter at the end."""
    for i, s in slot_steps:
        ray.get(learners[i].train_step.remote(shards[s]))
    return [ray.get(learner.send_weights.remote(1)).tensors for learner in learners]


def test_runs_sharing_one_learner_make_the_updates_each_makes_alone(local_ray, tiny_model_dir, tmp_path, global_batch):
    """Two runs in slots of one learner (a shared-base sweep's trials: grpo_ray.learner.slots), their calls
    interleaved, make the updates each makes on a learner of its own. Run b differs from the learner's
    build in lr, objective and KL weight, and in its batch (8 rows: two micro-batches where DeepSpeed was
    told four); its two steps show its optimizer state survives a's steps in between, and an update of b's
    whose loss is nan in between them (ZeRO-0 in float32: torch's own optimizer) left nothing behind."""
    from grpo_ray.actors.learner_worker import learner_settings
    from grpo_ray.sweep.shared import SlotBound

    alone_a, _ = one_update(tiny_model_dir, tmp_path, global_batch, 1, 0, "dapo")  # one step on the 16 rows
    b_keys = ("learner.micro_batch_size=4", "algo.loss_type=bnpo", "algo.beta=0", "learner.lr=0.01",
              "trainer.prompts_per_step=2", "learner.max_grad_norm=1e9")
    cfg_a = tiny_config(tiny_model_dir, tmp_path, "learner.micro_batch_size=4", "algo.loss_type=dapo", "algo.beta=0.04",
                        "learner.max_grad_norm=1e9")
    cfg_b = tiny_config(tiny_model_dir, tmp_path, *b_keys)
    prompt_ids, completion_ids, advantages = global_batch
    loss_mask = masks(completion_ids)
    full = split_into_shards(prompt_ids, completion_ids, advantages, loss_mask, 1)[0]
    halves = [split_into_shards(prompt_ids[r], completion_ids[r], advantages[r], loss_mask[r], 1)[0]
              for r in (slice(0, 8), slice(8, 16))]
    alone, shared = Workers(), Workers()
    try:
        alone.start_learners(cfg_b)
        (alone_b,) = _train(alone.learners, halves, [(0, 0), (0, 1)])
        shared.start_learners(cfg_a)  # built for a
        actor = shared.learners[0]
        ray.get([actor.open_slot.remote("a", learner_settings(cfg_a)), actor.open_slot.remote("b", learner_settings(cfg_b))])
        a, b = SlotBound(actor, "a"), SlotBound(actor, "b")
        ray.get(a.train_step.remote(full))
        slot_a = ray.get(a.send_weights.remote(1)).tensors
        (slot_b,) = _train([b], halves, [(0, 0)])  # b's first step, after a's
        with pytest.raises(NonFiniteUpdate, match="the loss is nan"):  # b's loss goes nan: refused, b fails alone
            ray.get(b.train_step.remote(nan_advantages(halves[1])))
        ray.get(a.train_step.remote(full))  # a again between b's steps
        (slot_b,) = _train([b], halves, [(0, 1)])
        assert ray.get(actor.slot_stats.remote()) == {"open": ["a", "b"], "switches": 4}
        # PBT's exploit: trial b restarts from trial a's checkpoint, in a slot opened afresh, with its own lr
        ray.get(a.save.remote(str(tmp_path / "a_ckpt"), 2))
        a_now = ray.get(a.send_weights.remote(2)).tensors
        ray.get(actor.open_slot.remote("b", learner_settings(cfg_b)))
        ray.get(b.load.remote(str(tmp_path / "a_ckpt")))
        exploited = ray.get(b.send_weights.remote(3)).tensors
        metrics = ray.get(b.train_step.remote(halves[0]))
    finally:
        alone.shutdown()
        shared.shutdown()
    assert all(bool(torch.isfinite(t).all()) for t in a_now.values())
    assert max(float((slot_b[k] - alone_a[k]).abs().max()) for k in alone_a if "lora_B" in k) > 1e-3  # b is not a
    for k in alone_a:
        torch.testing.assert_close(slot_a[k], alone_a[k], rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(slot_b[k], alone_b[k], rtol=1e-5, atol=1e-6, msg=k)
        assert torch.equal(exploited[k], a_now[k]), k
    assert metrics["learning_rate"] == pytest.approx(0.01)  # b's own, not a's 0.03 saved with the checkpoint


def test_a_restarted_shared_learner_gets_each_runs_slot_back_from_its_snapshot(local_ray, tiny_model_dir, tmp_path,
                                                                                global_batch):
    """A shared-base sweep's learner dies: Ray restarts it, holding no slots, and each run's liveness
    probe says so; each run's recovery (the solo run's LearnerGroup.recover) reopens its slot and restores
    its own snapshot of its last step into it."""
    from grpo_ray.run.learner_group import LearnerGroup
    from grpo_ray.run.shards import dead_actors
    from grpo_ray.sweep.shared import SharedBase, TrialWorkers

    cfg = tiny_config(tiny_model_dir, tmp_path, "learner.micro_batch_size=4", "trainer.prompts_per_step=2")
    prompt_ids, completion_ids, advantages = global_batch
    loss_mask = masks(completion_ids)
    halves = [split_into_shards(prompt_ids[r], completion_ids[r], advantages[r], loss_mask[r], 1)[0]
              for r in (slice(0, 8), slice(8, 16))]
    workers = Workers(learner_restarts=1)
    try:
        workers.start_learners(cfg)
        shared = SharedBase([], workers.learners[0])
        runs = {name: LearnerGroup(cfg, TrialWorkers(shared=shared, slot=name)) for name in ("a", "b")}
        for (name, group), shard in zip(runs.items(), halves):
            group.workers.start_learners(cfg)
            ray.get(group.learners[0].train_step.remote(shard))  # a and b learn different things
            group.snapshots.take(group.learners, 1)  # what every step ends with
        before = {name: ray.get(g.learners[0].send_weights.remote(1)).tensors for name, g in runs.items()}
        ray.kill(workers.learners[0], no_restart=False)
        deadline = time.monotonic() + 120
        while True:  # until the restarted process answers
            assert time.monotonic() < deadline, "the learner was not restarted"
            try:
                if not ray.get(workers.learners[0].slot_stats.remote())["open"]:
                    break
            except ray.exceptions.RayActorError:  # restarting
                pass
            time.sleep(0.5)
        for name, group in runs.items():
            assert dead_actors(group.learners) == [0], name  # answers, but holds no slot of the run
            group.recover([0], RuntimeError("killed"), 1)
        after = {name: ray.get(g.learners[0].send_weights.remote(1)).tensors for name, g in runs.items()}
        assert ray.get(workers.learners[0].slot_stats.remote())["open"] == ["a", "b"]
    finally:
        workers.shutdown()
    assert max(float((before["a"][k] - before["b"][k]).abs().max()) for k in before["a"]) > 1e-3
    for name in runs:
        for k in before[name]:
            assert torch.equal(after[name][k], before[name][k]), (name, k)
