"""RewardWorker: the reward functions of a run in a Ray actor.

Thin over :class:`grpo_ray.rewards.scorer.RewardScorer`, which runs the functions concurrently under
a timeout: user code in child processes of this actor that it kills at the timeout, pure built-ins
on its threads (``reward.isolation``). The constructor returns once every function has warmed up, so
the first batch pays no model load. The actor keeps no state a restart could lose besides which
functions have already had their error reported, so the driver may create it with ``max_restarts``
and re-send a batch whose worker died; a restarted worker may report a function's error one more
time. Its reward processes die with it.

The driver resolves the specs first (``resolve_specs``), so ``path/file.py:function`` rewards travel
to the actor by value and need not exist on its node::

    specs = resolve_specs([f.model_dump() for f in cfg.reward.functions])
    workers = [RewardWorker.options(max_restarts=3).remote(specs, cfg.data.tag_style, cfg.reward.timeout_s,
                                                           cfg.reward.isolation, cfg.reward.warmup_timeout_s)
               for _ in range(cfg.reward.num_workers)]
    parts = shard_slices(len(completions), len(workers), unit=cfg.rollout.group_size)
    result = merge_score_results(ray.get([
        w.score.remote(prompts[s], completions[s], {k: v[s] for k, v in columns.items()})
        for w, s in zip(workers, parts)
    ]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ray

from grpo_ray.rewards.scorer import RewardScorer, ScoreResult, merge_score_results, resolve_specs

__all__ = ["RewardWorker", "ScoreResult", "merge_score_results", "resolve_specs"]


@ray.remote
class RewardWorker:
    """One pool of reward functions; ``score`` is :meth:`RewardScorer.score` (rewards [N][F]); ``ping`` the
    display names (the metric keys)."""

    def __init__(
        self,
        functions: Sequence[Mapping[str, Any]],
        tag_style: str,
        timeout_s: float,
        isolation: str = "auto",
        warmup_timeout_s: float = 600.0,
    ) -> None:
        self.scorer = RewardScorer(functions, tag_style, timeout_s, isolation=isolation, warmup_timeout_s=warmup_timeout_s)

    def score(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Sequence[Any]]
    ) -> ScoreResult:
        return self.scorer.score(prompts, completions, columns)

    def ping(self) -> list[str]:
        """The reward names, once the functions have resolved: a liveness and config check."""
        return self.scorer.names
