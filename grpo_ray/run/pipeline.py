"""Generations in flight ahead of the update: asynchronous training with bounded staleness.

With ``trainer.async_rollout`` and ``trainer.max_policy_lag = K``, the rollout workers generate up to K
steps ahead: while step k updates, the generations of steps k+1 .. k+K are submitted (each under the
newest weights version published when it was submitted, carried in its request's
:class:`~grpo_ray.wire.WeightsHandle`). A batch sampled with version v and trained in the update that
turns version u into u+1 lags u - v <= K versions (``policy_version_lag``); the learner weights each
token by the truncated ratio of its own old policy to that batch's sampling logprobs.

Ray runs an actor's calls in order, so a rollout worker takes the queued generations oldest first and
only ever moves forward in versions: it holds one version at a time and loads the next with the shard
that needs it.

A checkpoint keeps the generations in flight, waited for
(:meth:`grpo_ray.run.rollout_client.RolloutClient.in_flight_state`): their
prompts and trajectories, sampled under the versions they were submitted with. A resumed run trains on
exactly those, so every mode resumes as the uninterrupted run goes on.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from grpo_ray.wire import RolloutBatch


@dataclass
class InFlight:
    """One step's prompts and their generation, submitted ahead of its update."""

    step: int  # the 0-based step this generation is for
    rows: list
    pending: Any = None  # PendingShards of RolloutBatch parts, until collected
    batch: Optional[RolloutBatch] = None  # the joined result, once collected
    submitted: float = field(default_factory=time.perf_counter)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of a collected generation."""
        assert self.batch is not None, "collect a generation before saving it"
        return {"step": self.step, "rows": self.rows, "batch": self.batch}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "InFlight":
        return cls(step=int(state["step"]), rows=list(state["rows"]), batch=state["batch"])


class GenerationPipeline:
    def __init__(self, depth: int) -> None:
        self.depth = depth  # K: generations that may run ahead of the update (0: synchronous)
        self.in_flight: deque[InFlight] = deque()

    def pop(self, step: int) -> Optional[InFlight]:
        """The generation submitted for ``step``, if any."""
        if self.in_flight and self.in_flight[0].step == step:
            return self.in_flight.popleft()
        return None

    def steps_to_submit(self, current: int, total: int) -> list[int]:
        """Steps whose generation should be submitted now, while step ``current`` updates."""
        last = self.in_flight[-1].step if self.in_flight else current
        return list(range(last + 1, min(current + self.depth, total - 1) + 1))

    def push(self, item: InFlight) -> None:
        if self.in_flight and item.step <= self.in_flight[-1].step:
            raise ValueError(f"generation for step {item.step} submitted after step {self.in_flight[-1].step}'s")
        self.in_flight.append(item)

    def clear(self) -> None:
        self.in_flight.clear()

    def __len__(self) -> int:
        return len(self.in_flight)
