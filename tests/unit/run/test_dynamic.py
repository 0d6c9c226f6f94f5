"""Dynamic sampling's bookkeeping on hand-made scored batches: which groups a step keeps, in what order,
and how the batch is filled when the rounds run out."""

from __future__ import annotations

import math

import pytest

from grpo_ray.rewards.scorer import ScoreResult
from grpo_ray.run.dynamic import Scored, fill_informative, group_loss_mask
from grpo_ray.wire import RolloutBatch

pytestmark = pytest.mark.unit
G = 2


def scored(tag: str, rewards: list[float]) -> Scored:
    """B = len(rewards) // G groups named tag0, tag1...; completion text says which group and row."""
    b = len(rewards) // G
    rows = [{"prompt": [{"role": "user", "content": f"{tag}{i}"}], "answer": "1"} for i in range(b)]
    batch = RolloutBatch(
        prompt_ids=[[i] for i in range(b)], completion_ids=[[1, 2]] * len(rewards),
        completion_texts=[f"{tag}{i // G}.{i % G}" for i in range(len(rewards))],
        sampling_logprobs=[[-0.5, -0.5]] * len(rewards), finish_reasons=["stop"] * len(rewards), group_size=G,
        policy_version=0, stats={"generate_s": 1.0, "completion_tokens": 2.0 * len(rewards)},
    )
    return Scored(rows, batch, ScoreResult([[r] for r in rewards], ["correctness"], [1.0]))


def test_keeps_the_informative_groups_in_draw_order_and_stops_when_full() -> None:
    first = scored("a", [1, 0, 1, 1, 0, 0])  # groups a0 (spread), a1 (all 1), a2 (all 0)
    more = {1: scored("b", [0, 0, 1, 0, 0, 1]), 2: scored("c", [1, 0, 1, 0, 1, 0])}
    drawn = []

    def next_round(r):
        drawn.append(r)
        return more[r]

    filled = fill_informative(first, next_round, max_rounds=3)
    batch, in_loss, metrics = filled.kept, filled.in_loss, filled.metrics
    assert drawn == [1]  # a0 + b1 + b2 = 3 groups: no third round
    assert [r["prompt"][0]["content"] for r in batch.rows] == ["a0", "b1", "b2"]
    assert batch.rollouts.completion_texts == ["a0.0", "a0.1", "b1.0", "b1.1", "b2.0", "b2.1"]
    assert batch.scores.rewards == [[1], [0], [1], [0], [0], [1]] and in_loss == [True] * 3
    assert metrics == {"sampling/rounds": 2.0, "sampling/prompts_drawn": 6.0, "sampling/informative_groups": 3.0}
    assert batch.rollouts.stats["completion_tokens"] == 24.0  # both rounds' generation is counted
    assert batch.rollouts.stats["generate_s"] == 2.0  # rounds run one after the other: their times add up
    assert len(filled.drawn.rows) == 6 and filled.drawn.scores.rewards[6:] == [[0], [0], [1], [0], [0], [1]]


def test_out_of_rounds_fills_with_groups_outside_the_loss() -> None:
    first = scored("a", [1, 1, 0, 0, 1, 0])  # only a2 has a spread
    filled = fill_informative(first, lambda r: scored("b", [1, 1, 0, 0, 0, 0]), max_rounds=1)
    batch, in_loss, metrics = filled.kept, filled.in_loss, filled.metrics
    assert [r["prompt"][0]["content"] for r in batch.rows] == ["a2", "a0", "a1"]
    assert in_loss == [True, False, False]
    assert group_loss_mask(in_loss, G).tolist() == [True, True, False, False, False, False]
    assert metrics["sampling/rounds"] == 2.0 and metrics["sampling/informative_groups"] == 1.0


def test_a_group_with_one_scorable_reward_is_not_informative() -> None:
    first = scored("a", [1, math.nan, 1, 0])
    filled = fill_informative(first, lambda r: scored("b", [0, 0, 0, 0]), max_rounds=1)
    batch, in_loss = filled.kept, filled.in_loss
    assert [r["prompt"][0]["content"] for r in batch.rows] == ["a1", "a0"] and in_loss == [True, False]
