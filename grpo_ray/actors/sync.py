"""The weight hand-off: a new policy version from the learners to every rollout worker.

Every learner rank is asked to export (under ZeRO-3 the weights are gathered collectively); rank 0's
:class:`~grpo_ray.wire.WeightUpdate` goes into the Ray object store once and each rollout worker pulls
it to its own node, so nothing assumes a shared filesystem. What the update is (the LoRA adapter, or
every weight in buckets) is the sync strategy's business (``grpo_ray.sync``).

A :class:`WeightHandoff` is made as soon as the update is submitted: each learner queues the export
of version v behind its train step, and each rollout worker queues the load behind that (Ray runs
an actor's calls in order and starts a call once its arguments exist), so the weights move the
moment the update ends, with no round trip through the driver; :meth:`WeightHandoff.wait` is the
step's sync phase. Every generation shard also carries the :class:`~grpo_ray.wire.WeightsHandle` of
the version it must be sampled with, and only a worker holding another version fetches it: a
restarted worker thus gets its shard's weights with the shard, and in async mode (``load=False``: the
workers are generating) the load runs on the rollout worker while the learner updates.
"""

from __future__ import annotations

import ray

from grpo_ray.actors.recovery import PendingShards
from grpo_ray.wire import WeightsHandle


class WeightHandoff:
    """Version ``version`` on its way from ``learners`` to ``rollouts`` (published only, when not ``load``)."""

    def __init__(self, learners: list, rollouts: list, version: int, load: bool = True, lineage: str = "") -> None:
        refs = [learner.export_weights.remote(version) for learner in learners]
        self.handle = WeightsHandle(version, refs[0], lineage)  # rank 0's update; the others only join a gather
        self._others = refs[1:]
        self._loads = None
        if load:
            self._loads = PendingShards("rollout", rollouts, [self.handle] * len(rollouts),
                                        lambda worker, handle: worker.load_weights.remote(handle))

    def wait(self) -> tuple[dict[str, float], int]:
        """Until every rollout worker holds the version (a worker that died meanwhile gets it again after
        its restart). Returns (metrics: the slowest worker's load seconds, loads sent again)."""
        ray.get(self._others)
        if self._loads is None:
            return {}, 0
        load_seconds, resent = self._loads.result()
        return {"sync/load_seconds_max": max(load_seconds, default=0.0)}, resent
