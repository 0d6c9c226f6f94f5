"""Adapter-only weight sync: learner rank 0's LoRA tensors to every rollout worker.

The payload goes into the Ray object store once and each rollout worker pulls it to its own node,
so nothing assumes a shared filesystem. Every learner rank is asked, because under ZeRO-3 the
tensors are gathered collectively; only rank 0 returns them.

An :class:`AdapterSync` is made as soon as the update is submitted: each learner queues the export
of version v behind its train step, and each rollout worker queues the load behind that (Ray runs
an actor's calls in order and starts a call once its arguments exist), so the adapter moves the
moment the update ends, with no round trip through the driver; :meth:`AdapterSync.wait` is the
step's sync phase. Every generation shard also carries the ref of the adapter it must be sampled
with, and a worker holding another version loads it first: a restarted worker thus gets its shard's
adapter with the shard, and in one-step-off async mode (``load=False``: the workers are generating)
the load runs on the rollout worker while the learner updates.
"""

from __future__ import annotations

import ray

from grpo_ray.actors.recovery import PendingShards


class AdapterSync:
    """Adapter ``version`` on its way from ``learners`` to ``rollouts`` (published only, when not ``load``)."""

    def __init__(self, learners: list, rollouts: list, version: int, load: bool = True) -> None:
        refs = [learner.adapter_payload.remote(version) for learner in learners]
        self.ref, self._others = refs[0], refs[1:]  # other ranks only take part in a ZeRO-3 gather
        self._loads = None
        if load:  # passed as a ref: resolved inside each worker, fetched once per node
            self._loads = PendingShards("rollout", rollouts, [self.ref] * len(rollouts),
                                        lambda worker, ref: worker.load_adapter.remote(ref))

    def wait(self) -> tuple[dict[str, float], int]:
        """Until every rollout worker holds the adapter (a worker that died meanwhile gets it again after
        its restart). Returns (metrics: the slowest worker's load seconds, loads sent again)."""
        ray.get(self._others)
        if self._loads is None:
            return {}, 0
        load_seconds, resent = self._loads.result()
        return {"sync/load_seconds_max": max(load_seconds, default=0.0)}, resent
