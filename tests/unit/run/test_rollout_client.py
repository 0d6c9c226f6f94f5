"""The rollout client with fake rollout workers: how prompts are split and seeded, the async pipeline,
and the in-flight generations a checkpoint keeps. No Ray."""

from __future__ import annotations

import pytest

from grpo_ray.rollout.prompting import per_prompt_seeds
from grpo_ray.run.rollout_client import RolloutClient
from grpo_ray.run.shards import FaultCounter
from grpo_ray.wire import WeightsHandle
from tests.unit.run.fakes import FakeActor, FakeCalls, FakeData, FakeRolloutWorker, Value
from grpo_ray.wire import LoraAdapter

pytestmark = pytest.mark.unit


def weights(version: int) -> WeightsHandle:
    return WeightsHandle(version, Value(LoraAdapter(version, {}, {})), "line")


def client(cfg, workers: int = 3, data=None):
    actors = [FakeActor(FakeRolloutWorker(), f"rollout{i}") for i in range(workers)]
    return RolloutClient(cfg, actors, data or FakeData(), FaultCounter(), calls=FakeCalls()), actors


def test_prompts_split_in_contiguous_shards_each_with_the_weights_and_its_global_seeds(make_cfg) -> None:
    rc, actors = client(make_cfg(), workers=3)
    prompts = [[{"role": "user", "content": f"p{i}"}] for i in range(5)]
    sampling = rc.sampling(3)
    batch = rc.generate(prompts, sampling, weights(7))
    requests = [args[0] for a in actors for name, args in a.submitted if name == "generate"]
    assert [len(r.prompts) for r in requests] == [2, 2, 1]
    assert [s for r in requests for s in r.seeds] == per_prompt_seeds(sampling.seed, 5)
    assert {r.weights.version for r in requests} == {7}
    assert len(batch) == 5 * 2 and batch.policy_version == 7


def test_each_step_and_each_dynamic_sampling_round_has_its_own_seed(make_cfg) -> None:
    rc, _ = client(make_cfg())
    seeds = {rc.sampling(s, r).seed for s in range(4) for r in range(3)}
    assert len(seeds) == 12


def test_a_shard_resent_after_its_worker_died_gives_the_same_trajectories(make_cfg) -> None:
    cfg = make_cfg()
    prompts = [[{"role": "user", "content": f"p{i}"}] for i in range(4)]
    rc, _ = client(cfg, workers=2)
    expected = rc.generate(prompts, rc.sampling(0), weights(1))
    rc, actors = client(cfg, workers=2)
    actors[1].die_during("generate")
    got = rc.generate(prompts, rc.sampling(0), weights(1))
    assert got.completion_ids == expected.completion_ids and rc.faults.total["rollout"] == 1


def test_async_prefetches_k_steps_ahead_and_the_step_takes_them_without_drawing(make_cfg) -> None:
    rc, _ = client(make_cfg("trainer.async_rollout=true", "trainer.max_policy_lag=2"))
    rows0, _ = rc.next_batch(0, weights(0))
    assert rc.prefetch(0, 6, weights(0)) == [1, 2]
    cursor = rc.data.sampler.state_dict()
    rows1, batch1 = rc.next_batch(1, weights(1))
    assert rc.data.sampler.state_dict() == cursor  # drawn when it was submitted
    assert batch1.policy_version == 0  # sampled under the weights it was submitted with
    assert [r["prompt"] for r in rows1] != [r["prompt"] for r in rows0]
    assert rc.prefetch(1, 6, weights(1)) == [3]


def test_in_flight_generations_survive_a_checkpoint_exactly(make_cfg) -> None:
    cfg = make_cfg("trainer.async_rollout=true", "trainer.max_policy_lag=2")
    rc, _ = client(cfg)
    rc.next_batch(0, weights(0))
    rc.prefetch(0, 6, weights(0))
    state, cursor = rc.in_flight_state(), rc.data.sampler.state_dict()
    expected = [rc.next_batch(s, weights(1)) for s in (1, 2)]
    expected.append(rc.next_batch(3, weights(1)))  # drawn after the in-flight ones

    data = FakeData()
    data.sampler.load_state_dict(cursor)
    resumed, _ = client(cfg, data=data)
    resumed.restore_in_flight(state)
    got = [resumed.next_batch(s, weights(1)) for s in (1, 2, 3)]
    for (rows_a, batch_a), (rows_b, batch_b) in zip(expected, got):
        assert rows_a == rows_b and batch_a.completion_ids == batch_b.completion_ids
        assert batch_a.policy_version == batch_b.policy_version
