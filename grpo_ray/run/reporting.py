"""What a step reports: rollout and reward metrics (TRL's names) and a small table of sample completions."""

from __future__ import annotations

from typing import Any

import torch

from grpo_ray.algo import frac_reward_zero_std, reward_function_stats
from grpo_ray.data.prompts import assistant_prefix, question_of
from grpo_ray.rewards.scorer import ScoreResult
from grpo_ray.wire import RolloutBatch


def rollout_metrics(rollouts: RolloutBatch, rewards: torch.Tensor, scores: ScoreResult, gen_seconds: float) -> dict[str, float]:
    g = rollouts.group_size
    lengths = torch.tensor([len(c) for c in rollouts.completion_ids], dtype=torch.float32)
    grouped = rewards.view(-1, g)
    metrics = {
        "reward": float(torch.nanmean(rewards)),
        "reward_std": float(torch.nanmean(grouped.std(dim=1))),
        "frac_reward_zero_std": frac_reward_zero_std(rewards, g),
        **reward_function_stats(torch.tensor(scores.rewards, dtype=torch.float32), scores.names),
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": sum(rollouts.is_truncated()) / len(rollouts),
        "rollout/tokens_per_s": float(lengths.sum()) / max(gen_seconds, 1e-9),
    }
    if "load_weights_s" in rollouts.stats:  # a worker loaded this batch's weights as part of its shard
        metrics["sync/load_seconds_in_generate_max"] = rollouts.stats["load_weights_s"]
    for name, count in scores.failures.items():
        metrics[f"rewards/{name}/failures"] = float(count)
    return metrics


def sample_rows(rows: list[dict[str, Any]], rollouts: RolloutBatch, rewards: torch.Tensor, scores: ScoreResult,
                count: int) -> list[dict[str, Any]]:
    """The first ``count`` completions as table rows: question, the whole reply (an assistant prefix
    included), gold answer, reward and each reward function's value."""
    g = rollouts.group_size
    out = []
    for i in range(min(count, len(rollouts))):
        row = rows[i // g]
        entry = {
            "prompt": question_of(row["prompt"]),
            "completion": assistant_prefix(row["prompt"]) + rollouts.completion_texts[i],
            "answer": str(row.get("answer", "")), "reward": float(rewards[i]),
        }
        entry.update({f"rewards/{n}": scores.rewards[i][j] for j, n in enumerate(scores.names)})
        out.append(entry)
    return out
