"""The reward workers as the trainer sees them: a step's reward inputs, split over the workers.

Reward functions get what TRL's get: ``prompts`` (one per completion), ``completions`` as the
conversations the trajectories form (lists of messages: the assistant reply, with an assistant
prefix put back in front; with tools, the tool turns too) and every dataset column as a keyword
argument, plus ``completion_ids`` (and, for multi-turn rollouts, each episode's ``tool_calls``,
``tool_errors``, ``tool_timeouts``, ``malformed_tool_calls`` and ``turns``). Completions are split over the reward workers in whole groups, and
a shard whose worker died is sent again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from grpo_ray.rewards.scorer import ScoreResult, merge_score_results
from grpo_ray.run.shards import RAY, Calls, FaultCounter, PendingShards
from grpo_ray.wire import RolloutBatch, shard_slices

log = logging.getLogger("grpo_ray.rewards")


@dataclass
class RewardInputs:
    """[N] prompts, [N] completions (message lists) and the columns (each [N]) reward functions get."""

    prompts: list[Any]
    completions: list[list[dict[str, Any]]]
    columns: dict[str, list[Any]]

    def shard(self, s: slice) -> tuple[list, list, dict[str, list]]:
        return self.prompts[s], self.completions[s], {k: v[s] for k, v in self.columns.items()}


def reward_inputs(rows: list[dict[str, Any]], rollouts: RolloutBatch) -> RewardInputs:
    """What the reward functions get for B data rows and their B*G trajectories."""
    g = rollouts.group_size
    prompts = [row["prompt"] for row in rows for _ in range(g)]
    columns = {k: [row[k] for row in rows for _ in range(g)] for k in rows[0] if k != "prompt"}
    columns["completion_ids"] = rollouts.completion_ids
    if rollouts.episode_stats is not None:  # multi-turn: how each episode used its tools
        for key in ("tool_calls", "tool_errors", "tool_timeouts", "malformed_tool_calls", "turns"):
            columns[key] = [int(e.get(key, 0)) for e in rollouts.episode_stats]
    return RewardInputs(prompts, rollouts.conversations(), columns)


class RewardClient:
    def __init__(self, workers: list, faults: Optional[FaultCounter] = None, *, calls: Calls = RAY) -> None:
        self.workers, self.calls = workers, calls
        self.faults = faults if faults is not None else FaultCounter()

    def score(self, rows: list[dict[str, Any]], rollouts: RolloutBatch) -> ScoreResult:
        """Rewards [N][F] for the trajectories; a reward function's new error is logged once."""
        inputs = reward_inputs(rows, rollouts)
        parts = shard_slices(len(inputs.completions), len(self.workers), unit=rollouts.group_size)
        results = PendingShards(
            "reward", self.workers[: len(parts)], parts,
            lambda worker, s: worker.score.remote(*inputs.shard(s)), calls=self.calls, faults=self.faults,
        ).result()
        result = merge_score_results(results)
        for message in result.new_errors:
            log.warning("reward function failed: %s", message)
        return result
