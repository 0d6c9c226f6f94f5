"""What a step reports: rollout and reward metrics (TRL's names) and a small table of sample completions."""

from __future__ import annotations

from typing import Any

import torch

from grpo_ray.algo import frac_reward_zero_std, reward_function_stats
from grpo_ray.data.prompts import question_of
from grpo_ray.rewards.scorer import ScoreResult
from grpo_ray.wire import RolloutBatch


def rollout_metrics(rollouts: RolloutBatch, rewards: torch.Tensor, scores: ScoreResult) -> dict[str, float]:
    """Rewards (TRL's names), completion lengths and the engines' own generation time and throughput.

    ``rollout/engine_tokens_per_s`` is the tokens the engines generated over the time they spent
    generating them (the slowest worker's; dynamic-sampling rounds added up), so in async mode it does
    not count the time a generation waited in the queue or behind an update."""
    g = rollouts.group_size
    lengths = torch.tensor([len(c) for c in rollouts.completion_ids], dtype=torch.float32)
    metrics = {
        **reward_metrics(rewards, g),
        **reward_function_stats(torch.tensor(scores.rewards, dtype=torch.float32), scores.names),
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": sum(rollouts.is_truncated()) / len(rollouts),
    }
    stats = rollouts.stats
    if "generate_s" in stats:
        metrics["rollout/engine_generate_s"] = stats["generate_s"]
        metrics["rollout/completion_tokens"] = stats.get("completion_tokens", float(lengths.sum()))
        metrics["rollout/engine_tokens_per_s"] = metrics["rollout/completion_tokens"] / max(stats["generate_s"], 1e-9)
    if "load_weights_s" in stats:  # a worker loaded this batch's weights as part of its shard
        metrics["sync/load_seconds_in_generate_max"] = stats["load_weights_s"]
    for name, count in scores.failures.items():
        metrics[f"rewards/{name}/failures"] = float(count)
    if rollouts.episode_stats is not None:
        metrics.update(tool_metrics(rollouts.episode_stats))
    return metrics


def tool_metrics(episodes: list[dict[str, float]]) -> dict[str, float]:
    """Multi-turn rollouts: per episode, tool calls, errors and timeouts, turns and tokens (the model's
    own and the tools'), and the share of episodes that called a tool at all."""
    n = max(1, len(episodes))

    def total(key: str) -> float:
        return float(sum(e.get(key, 0) for e in episodes))

    calls = total("tool_calls")
    return {
        "tools/call_rate": sum(1 for e in episodes if e.get("tool_calls", 0) > 0) / n,
        "tools/calls_per_episode": calls / n,
        "tools/error_rate": total("tool_errors") / calls if calls else 0.0,
        "tools/timeouts": total("tool_timeouts"),
        "tools/malformed_calls_per_episode": total("malformed_tool_calls") / n,
        "tools/turns_per_episode": total("turns") / n,
        "tools/model_tokens_per_episode": total("model_tokens") / n,
        "tools/tool_tokens_per_episode": total("tool_tokens") / n,
        "tools/limit_hit_rate": total("limit_hit") / n,
    }


def inflight_metrics(rollouts: RolloutBatch, learner_version: int) -> dict[str, float]:
    """In-flight weight updates, for the batch that the update of ``learner_version`` trains on: how many
    versions behind the learner its tokens were sampled on average (``policy_version_lag`` is the
    most), and the share of trajectories whose tokens came from more than one version. Empty for a
    batch whose every token was sampled by one version."""
    if rollouts.token_versions is None:
        return {}
    lags = [learner_version - v for row in rollouts.token_versions for v in row]
    switched = sum(1 for row in rollouts.token_versions if len(set(row)) > 1)
    return {"rollout/token_lag_mean": sum(lags) / max(1, len(lags)),
            "rollout/updated_in_flight_frac": switched / max(1, len(rollouts.token_versions))}


def reward_metrics(rewards: torch.Tensor, group_size: int, prefix: str = "") -> dict[str, float]:
    """``reward``, ``reward_std`` (the mean of the groups' stds) and ``frac_reward_zero_std`` of [N] rewards."""
    return {
        f"{prefix}reward": float(torch.nanmean(rewards)),
        f"{prefix}reward_std": float(torch.nanmean(rewards.view(-1, group_size).std(dim=1))),
        f"{prefix}frac_reward_zero_std": frac_reward_zero_std(rewards, group_size),
    }


def sample_rows(rows: list[dict[str, Any]], rollouts: RolloutBatch, rewards: torch.Tensor, scores: ScoreResult,
                count: int = 4) -> list[dict[str, Any]]:
    """The first ``count`` trajectories as table rows: question, the whole transcript (an assistant
    prefix included), gold answer, reward and each reward function's value."""
    g = rollouts.group_size
    conversations = rollouts.conversations()
    out = []
    for i in range(min(count, len(rollouts))):
        row = rows[i // g]
        entry = {
            "prompt": question_of(row["prompt"]),
            "completion": transcript(conversations[i]),
            "answer": str(row.get("answer", "")), "reward": float(rewards[i]),
        }
        entry.update({f"rewards/{n}": scores.rewards[i][j] for j, n in enumerate(scores.names)})
        out.append(entry)
    return out


def transcript(messages: list[dict[str, Any]]) -> str:
    """A trajectory's messages as text: a lone assistant reply as it is, several turns each under its role."""
    if len(messages) == 1 and messages[0].get("role") == "assistant":
        return str(messages[0].get("content") or "")
    return "\n".join(f"[{m.get('role')}] {m.get('content') or ''}" for m in messages)


def dry_run(rollout, rewards, count: int = 8) -> dict[str, Any]:
    """One rollout + reward batch with the starting policy through a run's rollout and reward clients:
    sample rows and the batch's metrics; no update, nothing saved."""
    from grpo_ray.run.batch import combined_rewards

    rows, batch = rollout.next_batch(0, None)
    scores = rewards.score(rows, batch)
    combined = combined_rewards(scores)
    return {"samples": sample_rows(rows, batch, combined, scores, count),
            "metrics": rollout_metrics(batch, combined, scores)}
