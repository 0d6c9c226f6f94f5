"""The reward client with fake reward workers: what reward functions receive, whole groups per worker,
and a shard resent after its worker died. No Ray."""

from __future__ import annotations

import pytest

from grpo_ray.run.reward_client import RewardClient, reward_inputs
from grpo_ray.wire import RolloutBatch
from tests.unit.run.fakes import FakeActor, FakeCalls, FakeRewardWorker

pytestmark = pytest.mark.unit

G = 2
ROWS = [{"prompt": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "<r>"}], "answer": str(i)}
        for i in range(3)]


def batch() -> RolloutBatch:
    ids = [[i, 1] for i in range(6)]
    texts = [f"{i} 1" for i in range(6)]
    return RolloutBatch(prompt_ids=[[0]] * 3, completion_ids=ids, completion_texts=texts,
                        sampling_logprobs=[[0.0, 0.0]] * 6, finish_reasons=["stop"] * 6, group_size=G, policy_version=0,
                        completion_messages=[[{"role": "assistant", "content": "<r>" + t}] for t in texts])


def test_reward_functions_get_conversations_prompts_per_completion_and_columns() -> None:
    inputs = reward_inputs(ROWS, batch())
    assert inputs.prompts == [r["prompt"] for r in ROWS for _ in range(G)]
    assert inputs.completions[3] == [{"role": "assistant", "content": "<r>3 1"}]  # the prefix is part of the reply
    assert inputs.columns["answer"] == ["0", "0", "1", "1", "2", "2"]
    assert inputs.columns["completion_ids"][5] == [5, 1] and "prompt" not in inputs.columns


def test_whole_groups_go_to_each_worker_and_a_dead_workers_shard_is_resent() -> None:
    workers = [FakeActor(FakeRewardWorker(), f"reward{i}") for i in range(2)]
    expected = RewardClient(workers, calls=FakeCalls()).score(ROWS, batch())
    assert [w.obj.batches for w in workers] == [[4], [2]]  # 3 groups of 2: 2 + 1
    workers[0].die_during("score")
    client = RewardClient(workers, calls=FakeCalls())
    again = client.score(ROWS, batch())
    assert again.rewards == expected.rewards and client.faults.total["reward"] == 1
    assert [r[0] for r in expected.rewards] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]  # the first number is even
