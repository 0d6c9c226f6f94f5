"""The rollout workers as the trainer sees them.

Each step's prompts are drawn from the data cursor and turned into trajectories by the rollout
workers, either now or ahead of time (async: :mod:`grpo_ray.run.pipeline`). The verbs:

- :meth:`RolloutClient.next_batch`: the step's prompts and trajectories (taken from the pipeline when
  they were submitted ahead, else drawn and generated now);
- :meth:`RolloutClient.extra_round`: B more prompts for dynamic sampling, generated now;
- :meth:`RolloutClient.prefetch`: submit the next steps' generations while the learners update;
- :meth:`RolloutClient.generate`: any prompts under given sampling settings (held-out evaluation).

Prompts are split over the workers in contiguous slices; each shard carries the weights it must be
sampled with and one seed per prompt, so a shard sent again after its worker died is sampled the
same way (:class:`~grpo_ray.run.shards.PendingShards`).
"""

from __future__ import annotations

from typing import Any, Optional

from grpo_ray.config import GRPOConfig
from grpo_ray.rollout.kinds.base import kind_spec
from grpo_ray.rollout.prompting import per_prompt_seeds
from grpo_ray.run.pipeline import GenerationPipeline, InFlight
from grpo_ray.run.shards import RAY, Calls, FaultCounter, PendingShards
from grpo_ray.wire import GenerationRequest, RolloutBatch, SamplingConfig, WeightsHandle, shard_slices

# Extra dynamic-sampling rounds of a step draw their own seeds, far from every step's own.
_ROUND_SEED_STRIDE = 1_000_000_007


class RolloutClient:
    def __init__(self, cfg: GRPOConfig, workers: list, data: Any, faults: Optional[FaultCounter] = None, *,
                 calls: Calls = RAY) -> None:
        """``data``: the run's :class:`~grpo_ray.data.training.TrainingData` (anything with
        ``sample_prompts(count)``)."""
        self.cfg, self.workers, self.data, self.calls = cfg, workers, data, calls
        self.faults = faults if faults is not None else FaultCounter()
        self.kind = kind_spec(cfg)  # every shard names it: a restarted or reused worker makes this run's kind
        tr = cfg.trainer
        self.pipeline = GenerationPipeline(tr.max_policy_lag if tr.async_rollout else 0)
        self.inflight = cfg.rollout.inflight_weight_updates  # generations ahead take newer weights (async only: validated)

    # -- settings -------------------------------------------------------------------------------
    def sampling(self, step: int, round_: int = 0) -> SamplingConfig:
        """Step ``step``'s sampling settings; each dynamic-sampling round has seeds of its own."""
        r = self.cfg.rollout
        return SamplingConfig(
            n=r.group_size, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
            max_tokens=r.max_completion_tokens, seed=self.cfg.trainer.seed * 100_003 + step + round_ * _ROUND_SEED_STRIDE,
        )

    def draw(self) -> list[dict[str, Any]]:
        """The next B prompts of the data cursor."""
        return self.data.sample_prompts(self.cfg.trainer.prompts_per_step)

    # -- generation -----------------------------------------------------------------------------
    def submit(self, prompts: list, sampling: SamplingConfig, weights: Optional[WeightsHandle],
               rows: Optional[list[dict[str, Any]]] = None, inflight: bool = False) -> PendingShards:
        """The prompts split over the rollout workers, each shard under ``weights`` (``rows``: the prompts'
        data rows, whose other columns a multi-turn rollout's environment starts from; ``inflight``: the
        shards take newer versions while they run, for generations ahead of the update)."""
        seeds = per_prompt_seeds(sampling.seed, len(prompts))  # global indices: sharding changes nothing
        parts = shard_slices(len(prompts), len(self.workers))
        columns = [{k: v for k, v in row.items() if k != "prompt"} for row in rows] if rows is not None else None
        return PendingShards(
            "rollout", self.workers[: len(parts)],
            [GenerationRequest(prompts[s], sampling, seeds[s], weights, columns[s] if columns else None, self.kind,
                               inflight) for s in parts],
            lambda worker, request: worker.generate.remote(request), calls=self.calls, faults=self.faults,
        )

    @staticmethod
    def collect(pending: PendingShards) -> RolloutBatch:
        return RolloutBatch.concat(pending.result())

    def generate(self, prompts: list, sampling: SamplingConfig, weights: Optional[WeightsHandle],
                 rows: Optional[list[dict[str, Any]]] = None) -> RolloutBatch:
        return self.collect(self.submit(prompts, sampling, weights, rows))

    def next_batch(self, step: int, weights: Optional[WeightsHandle]) -> tuple[list[dict[str, Any]], RolloutBatch]:
        """Step ``step``'s prompts and trajectories: submitted earlier (async), or drawn and generated now."""
        ahead = self.pipeline.pop(step)
        if ahead is not None:
            return ahead.rows, self._finished(ahead)
        rows = self.draw()
        return rows, self.generate([r["prompt"] for r in rows], self.sampling(step), weights, rows)

    def extra_round(self, step: int, round_: int, weights: Optional[WeightsHandle]) -> tuple[list[dict[str, Any]], RolloutBatch]:
        """Dynamic sampling: B more prompts, generated now under ``weights``."""
        rows = self.draw()
        return rows, self.generate([r["prompt"] for r in rows], self.sampling(step, round_), weights, rows)

    def prefetch(self, current: int, total: int, weights: Optional[WeightsHandle]) -> list[int]:
        """Async: submit the generations of the steps up to K ahead of ``current`` under ``weights`` (the
        newest published version); returns those steps."""
        steps = self.pipeline.steps_to_submit(current, total)
        for step in steps:
            rows = self.draw()
            self.pipeline.push(InFlight(step, rows, self.submit([r["prompt"] for r in rows], self.sampling(step), weights,
                                                                rows, inflight=self.inflight)))
        return steps

    @property
    def generating_ahead(self) -> bool:
        """Whether generations for later steps are queued on the workers (they load new weights themselves)."""
        return len(self.pipeline) > 0

    # -- checkpoints ----------------------------------------------------------------------------
    def in_flight_state(self) -> list[dict[str, Any]]:
        """Every generation in flight, waited for: what a checkpoint keeps so that a resumed run trains
        on the same trajectories, sampled under the versions they were submitted with."""
        for item in self.pipeline.in_flight:
            self._finished(item)
        return [item.state() for item in self.pipeline.in_flight]

    def restore_in_flight(self, states: list[dict[str, Any]]) -> None:
        self.pipeline.clear()
        for state in states:
            self.pipeline.push(InFlight.from_state(state))

    def _finished(self, item: InFlight) -> RolloutBatch:
        if item.batch is None:
            item.batch, item.pending = self.collect(item.pending), None
        return item.batch
