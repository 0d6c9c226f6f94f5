"""The learner group with fake learners: versions and their hand-off, recovery of a dead rank from the
snapshot (the same update as with no death), the way back when the snapshot is gone, and a group that
keeps dying. No Ray."""

from __future__ import annotations

import pytest
import torch

from grpo_ray.run.batch import StepBatch
from grpo_ray.run.learner_group import LearnerDied, LearnerGroup, RewindToCheckpoint
from grpo_ray.wire import RolloutBatch
from tests.unit.run.fakes import FakeCalls, FakeWorkers, Lost, Value, in_order

pytestmark = pytest.mark.unit


def step_batch(seed: int) -> tuple[RolloutBatch, StepBatch]:
    ids = [[seed, i] for i in range(8)]
    rollouts = RolloutBatch(prompt_ids=[[1]] * 4, completion_ids=ids, completion_texts=[""] * 8,
                            sampling_logprobs=[[0.0, 0.0]] * 8, finish_reasons=["stop"] * 8, group_size=2, policy_version=0)
    return rollouts, StepBatch(torch.zeros(8), torch.zeros(8), [[1, 1]] * 8)


def group(cfg, **kw) -> tuple[LearnerGroup, FakeWorkers]:
    workers = FakeWorkers(**kw)
    g = LearnerGroup(cfg, workers, calls=FakeCalls())
    g.connect()
    g.publish(0)
    return g, workers


def learn(g: LearnerGroup, steps: range, generating: bool = False) -> list[dict]:
    return [g.learn(*step_batch(s), s, generating=generating) for s in steps]


def test_every_member_joins_a_transport_with_learner_rank_0s_address_and_plan(make_cfg) -> None:
    """vllm_transfer: rank 0 names the rendezvous and the plan (the weights the engines will receive), and
    each engine joins with all of its tensor-parallel ranks; the object store's strategies need neither."""
    workers = FakeWorkers()
    LearnerGroup(make_cfg("model.lora.enabled=false", "sync.strategy=vllm_transfer", "rollout.tensor_parallel_size=2"),
                 workers, calls=FakeCalls()).connect()
    topologies = [a.obj.topology for a in workers.learners + workers.rollouts]
    assert all(t == topologies[0] for t in topologies)
    t = topologies[0]
    assert (t.address, t.plan, t.ranks_per_rollout, t.num_rollouts, t.num_learners) == (
        ("node-of-rank0", 29500), "plan-of-rank0", 2, 2, 2)
    assert [w.obj.strategy for w in workers.rollouts] == ["vllm_transfer"] * 2
    workers = FakeWorkers()
    LearnerGroup(make_cfg(), workers, calls=FakeCalls()).connect()
    assert (workers.learners[0].obj.topology.address, workers.learners[0].obj.topology.plan) == (None, None)


def test_a_worker_restarted_between_calls_is_connected_again_before_the_next_hand_off(make_cfg) -> None:
    """No failed call reported the restart (the actor died while idle); the worker's own answer does, and
    everyone joins the transport again before a broadcast would wait for the missing member."""
    from grpo_ray.sync.broadcast import BroadcastWeights

    g, workers = group(make_cfg("model.lora.enabled=false", "sync.strategy=vllm_transfer"))
    for learner in workers.learners:  # rank 0 reports each transfer whole
        sent = learner.obj.send_weights
        learner.obj.send_weights = lambda v, live=False, sent=sent: sent(v, live) and BroadcastWeights(v, 0, (), True)
    learn(g, range(2))
    connects = [w.obj.connects for w in workers.rollouts]
    learn(g, range(2, 3))
    assert [w.obj.connects for w in workers.rollouts] == connects  # all in the group: nothing to redo
    workers.rollouts[1].obj.connected = False  # Ray restarted it: its new process is in no group
    learn(g, range(3, 4))
    assert [w.obj.connects for w in workers.rollouts] == [c + 1 for c in connects] and g.version == 4


def test_each_update_is_a_version_that_every_rollout_worker_loads(make_cfg) -> None:
    g, workers = group(make_cfg())
    assert g.version == 0 and [w.obj.version for w in workers.rollouts] == [0, 0]
    metrics = learn(g, range(2))
    assert g.version == 2 and g.weights.version == 2 and [w.obj.loads for w in workers.rollouts] == [[0, 1, 2]] * 2
    assert metrics[-1]["loss"] == 4.0  # each rank reports its count of updates; summed over 2 ranks
    assert "sync/load_seconds_max" in metrics[-1]


def test_colocated_engines_sleep_before_the_update_and_receive_its_weights_after_it(make_cfg) -> None:
    """Each GPU holds an engine and a learner rank: every engine frees its memory before any rank updates,
    and each rank frees its cached memory before it sends, so the engines wake into free memory, and
    load the new weights once awake (the engines wake themselves on the load)."""
    g, workers = group(make_cfg("trainer.colocate=true", "rollout.num_workers=2"))
    start = len(in_order(workers.rollouts + workers.learners))
    learn(g, range(1))
    calls = in_order(workers.rollouts + workers.learners)[start:]
    first_update = calls.index(("learner0", "train_step"))
    assert sorted(calls[:first_update]) == [("rollout0", "sleep"), ("rollout1", "sleep")]
    for rank in ("learner0", "learner1"):
        mine = [m for a, m in calls if a == rank]
        assert mine.index("train_step") < mine.index("free_cached_memory") < mine.index("send_weights")
    loads = [i for i, (a, m) in enumerate(calls) if m == "receive_weights"]
    assert len(loads) == 2 and min(loads) > first_update and [w.obj.loads[-1] for w in workers.rollouts] == [1, 1]

    apart, workers = group(make_cfg())
    learn(apart, range(1))
    assert not [c for c in in_order(workers.rollouts + workers.learners) if c[1] in ("sleep", "free_cached_memory")]


def test_with_generations_queued_the_workers_load_the_version_themselves(make_cfg) -> None:
    g, workers = group(make_cfg())
    learn(g, range(1), generating=True)
    assert g.weights.version == 1 and [w.obj.loads for w in workers.rollouts] == [[0], [0]]


def test_in_flight_updates_offer_each_new_version_to_the_generating_workers(make_cfg) -> None:
    """Async with in-flight updates: the workers are busy with generations ahead, so each new version is
    offered to them (taken between decoding steps once sent) instead of loaded behind their queue."""
    g, workers = group(make_cfg("trainer.async_rollout=true", "rollout.inflight_weight_updates=true"))
    learn(g, range(2), generating=True)
    assert [w.obj.offered.version for w in workers.rollouts] == [2, 2] and [w.obj.loads for w in workers.rollouts] == [[0], [0]]
    plain, workers = group(make_cfg("trainer.async_rollout=true"))
    learn(plain, range(1), generating=True)
    assert not any(m == "offer_weights" for w in workers.rollouts for m, _ in w.submitted)


def test_rollout_workers_shared_with_other_runs_get_the_weights_with_the_next_shard(make_cfg) -> None:
    """A shared-base sweep's trial: no eager loads (another trial would replace them); every shard carries them."""
    workers = FakeWorkers()
    workers.rollouts_shared = True
    g = LearnerGroup(make_cfg(), workers, calls=FakeCalls())
    g.connect()
    g.publish(0)
    learn(g, range(2))
    assert g.weights.version == 2 and [w.obj.loads for w in workers.rollouts] == [[], []]


def test_a_dead_rank_is_replaced_from_the_snapshot_and_the_step_sent_again(make_cfg) -> None:
    cfg = make_cfg()
    clean, _ = group(cfg)
    learn(clean, range(3))
    g, workers = group(cfg)
    learn(g, range(2))
    lineage = g.lineage
    workers.learners[1].die_during("train_step", for_good=True)
    learn(g, range(2, 3))
    assert workers.learner_starts == 2 and g.faults.total["learner"] == 1
    assert g.lineage != lineage  # the restored group's versions are a new line
    assert [a.obj.trained for a in workers.learners] == [a.obj.trained for a in clean.learners]
    assert g.version == 3


def test_a_lost_snapshot_sends_the_run_back_to_its_checkpoint(make_cfg) -> None:
    g, workers = group(make_cfg())
    learn(g, range(1))
    g.snapshots._files = [Value(Lost("node gone")) for _ in g.snapshots._files]
    workers.learners[0].die_during("train_step", for_good=True)
    with pytest.raises(RewindToCheckpoint, match="snapshot of step 1 is gone"):
        learn(g, range(1, 2))


def test_learners_that_keep_dying_stop_the_run(make_cfg) -> None:
    g, workers = group(make_cfg())
    original = workers.start_learners

    def start_dying(cfg):
        actors = original(cfg)
        actors[0].die_during("train_step", for_good=True)
        return actors

    workers.start_learners = start_dying
    workers.learners[0].die_during("train_step", for_good=True)
    with pytest.raises(LearnerDied, match="learners died 3 times in step 1"):
        learn(g, range(1))
