"""The learner ranks as the trainer sees them: the update, the hand-off of its weights to the rollout
workers, a snapshot after every step, and the way back when a rank dies.

The weight hand-off (:class:`WeightHandoff`) is made as soon as the update is submitted: each learner
queues the send of version v behind its train step, and each rollout worker queues the receive
behind its earlier calls (Ray runs an actor's calls in order), so the weights move the moment the
update ends, with no round trip through the driver; how they move is the sync strategy's business
(``grpo_ray.sync``). Every generation shard also carries the :class:`~grpo_ray.wire.WeightsHandle`
of the version it must be sampled with, and only a worker holding another version fetches it: a
restarted worker thus gets its shard's weights with the shard, and in async mode (``load=False``:
the workers are generating ahead) the load runs on the rollout worker while the learner updates.

Versions carry a lineage (:attr:`LearnerGroup.lineage`), renewed whenever the learners are replaced or
the run goes back to a checkpoint, so a worker never takes another line's version k for this one's.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import nullcontext
from typing import Any, Optional

from grpo_ray.config import GRPOConfig
from grpo_ray.run.shards import RAY, Calls, FaultCounter, PendingShards, dead_actors
from grpo_ray.run.snapshots import LearnerSnapshots, SnapshotLost
from grpo_ray.sync import WEIGHT_SYNCS
from grpo_ray.sync.base import SyncTopology
from grpo_ray.utils.reduce import reduce_named
from grpo_ray.wire import RolloutBatch, WeightsHandle, split_into_shards

log = logging.getLogger("grpo_ray.learners")


class LearnerDied(RuntimeError):
    """The learners keep dying: the run stops (resume from a checkpoint)."""


class RewindToCheckpoint(Exception):
    """A learner died and its snapshot with it: the run goes back to the last checkpoint (or the start)."""


def new_lineage() -> str:
    return uuid.uuid4().hex[:12]


class WeightHandoff:
    """Version ``version`` on its way from ``learners`` to ``rollouts`` (published only, when not ``load``)."""

    def __init__(self, learners: list, rollouts: list, version: int, *, load: bool = True, lineage: str = "",
                 strategy: str = "", calls: Calls = RAY, faults: Optional[FaultCounter] = None, offer: bool = False) -> None:
        refs = [learner.send_weights.remote(version, load) for learner in learners]
        self.handle = WeightsHandle(version, refs[0], lineage, strategy)  # rank 0's update; the others join a gather
        self.calls, self.live = calls, load
        self._others = refs[1:]
        self._loads = None
        if offer:  # in-flight updates: each worker takes it between decoding steps once sent (a dead one with its next shard)
            for worker in rollouts:
                worker.offer_weights.remote(self.handle)
        if load:
            self._loads = PendingShards("rollout", rollouts, [self.handle] * len(rollouts),
                                        lambda worker, handle: worker.receive_weights.remote(handle, True),
                                        calls=calls, faults=faults)

    def wait(self) -> dict[str, float]:
        """Until every rollout worker holds the version (a worker that died meanwhile gets it again after
        its restart). Returns the slowest worker's load seconds."""
        self.calls.get(self._others)
        if self._loads is None:
            return {}
        return {"sync/load_seconds_max": max(self._loads.result(), default=0.0)}


class LearnerGroup:
    """``workers``: the run's :class:`~grpo_ray.cluster.Workers` (its learners are replaced on recovery)."""

    def __init__(self, cfg: GRPOConfig, workers: Any, faults: Optional[FaultCounter] = None, *, calls: Calls = RAY,
                 max_attempts: int = 3) -> None:
        self.cfg, self.workers, self.calls, self.max_attempts = cfg, workers, calls, max_attempts
        self.faults = faults if faults is not None else FaultCounter()
        self.version = 0  # weights version on the rollout workers: the number of updates applied
        self.lineage = new_lineage()
        self._connected_at = 0  # rollout faults counted when the sync transport was last connected
        self.weights: Optional[WeightsHandle] = None  # the handle of ``version``: every generation shard carries one
        snapshot = cfg.learner.snapshot_state
        self.snapshots = LearnerSnapshots(cfg.model.lora.enabled if snapshot is None else snapshot, calls)

    @property
    def learners(self) -> list:
        return self.workers.learners

    # -- weights --------------------------------------------------------------------------------
    def connect(self) -> None:
        """Every learner rank and rollout worker joins the sync strategy's transport: when the group starts,
        and again whenever a member of a transport of the strategy's own was replaced or it broke."""
        strategy = self.cfg.sync_strategy
        kind = WEIGHT_SYNCS.get(strategy)
        address = self.calls.get(self.learners[0].rendezvous_address.remote()) if kind.needs_address else None
        plan = self.calls.get(self.learners[0].sync_plan.remote()) if kind.needs_plan else None
        topology = SyncTopology(len(self.learners), len(self.workers.rollouts), address, tuple(self.learners),
                                ranks_per_rollout=self.cfg.rollout.tensor_parallel_size, plan=plan)
        self.calls.get([learner.connect_sync.remote(topology) for learner in self.learners]
                       + [worker.connect_sync.remote(topology, i, strategy) for i, worker in enumerate(self.workers.rollouts)])
        self._connected_at = self.faults.total.get("rollout", 0)

    def _reconnect_if_needed(self) -> None:
        """A strategy with a transport of its own needs every member alive and connected: after a rollout
        worker was restarted (its new process is in no group), connect everyone again. A restart that no
        failed call reported (the actor died between calls) shows in the workers' own answer."""
        if not WEIGHT_SYNCS.get(self.cfg.sync_strategy).needs_address:
            return
        restarted = self.faults.total.get("rollout", 0) != self._connected_at
        if restarted or not all(self.calls.get([w.sync_connected.remote() for w in self.workers.rollouts])):
            self.connect()

    def publish(self, step: int) -> None:
        """Hand the current version to every rollout worker (a fresh or restarted one holds no weights),
        and keep a snapshot of the learners as they are after ``step``."""
        handoff = self._handoff(self.version, load=True)
        handoff.wait()
        self._check_transport(handoff)
        self.weights = handoff.handle
        self.snapshots.take(self.learners, step)

    def _check_transport(self, handoff: WeightHandoff) -> dict[str, float]:
        """After a synchronous hand-off over the strategy's own transport: if it did not go through whole
        (rank 0 fell back to the object store), connect again before the next one."""
        if not (handoff.live and WEIGHT_SYNCS.get(self.cfg.sync_strategy).needs_address):
            return {}
        complete = bool(getattr(self.calls.get(handoff.handle.ref), "complete", False))
        if not complete:
            self._connected_at = -1
        return {"sync/broadcast_complete": float(complete)}

    def _handoff(self, version: int, load: bool) -> WeightHandoff:
        # Rollout workers shared with other runs (a shared-base sweep) load this run's weights with its next
        # shard, which carries them: loaded now, another run's shard would likely replace them before then.
        load = load and not getattr(self.workers, "rollouts_shared", False)
        if load:
            self._reconnect_if_needed()
        offer = not load and self.cfg.rollout.inflight_weight_updates  # (validated: async runs only)
        return WeightHandoff(self.learners, self.workers.rollouts, version, load=load, lineage=self.lineage,
                             strategy=self.cfg.sync_strategy, calls=self.calls, faults=self.faults, offer=offer)

    # -- the update -----------------------------------------------------------------------------
    def learn(self, rollouts: RolloutBatch, batch: Any, step: int, *, generating: bool, timer: Any = None
              ) -> dict[str, float]:
        """Step ``step + 1``'s update and the sync of the weights it makes (``generating``: rollout workers
        have generations queued and load the new version themselves, with their next shard). A learner
        that dies in either is replaced: the group starts again from its snapshot of the last step and
        the step is sent again. Returns the learners' metrics (joined over ranks) and the sync's."""
        phase = timer.phase if timer is not None else (lambda name: nullcontext())
        if self.cfg.trainer.colocate:
            with phase("sleep"):
                self._sleep_engines()
        for attempt in range(1, self.max_attempts + 1):
            try:
                with phase("update"):  # the new weights' hand-off is queued behind it on every actor
                    refs = self._submit_update(rollouts, batch)
                    if self.cfg.trainer.colocate:  # before the send, so the engines wake into free memory
                        for learner in self.learners:
                            learner.free_cached_memory.remote()
                    handoff = self._handoff(self.version + 1, load=not generating)
                    per_rank = self.calls.get(refs)
                with phase("sync"):
                    sync_metrics = {**handoff.wait(), **self._check_transport(handoff)}
                break
            except self.calls.failed as err:
                dead = dead_actors(self.learners, self.calls)
                if not dead:
                    raise
                if attempt == self.max_attempts:
                    raise LearnerDied(f"learners died {attempt} times in step {step + 1}") from None
                with phase("learner_recovery"):
                    self.recover(dead, err, step)
        self.weights = handoff.handle
        self.version += 1
        self.snapshots.take(self.learners, step + 1)  # queued behind the send: the driver does not wait
        metrics = reduce_named(per_rank, weights=[m.get("num_tokens", 1.0) for m in per_rank])
        return {**metrics, **sync_metrics, **self.snapshots.metrics()}

    def _sleep_engines(self) -> None:
        """Colocated: every rollout engine frees its GPU memory before the learners update on the same GPUs
        (each wakes by itself for the sync and the next generation). A worker that died meanwhile comes
        back awake, and its fault is counted when it is next asked for work."""
        try:
            self.calls.get([worker.sleep.remote() for worker in self.workers.rollouts])
        except self.calls.failed as err:
            log.warning("a rollout worker could not sleep before the update (%s)",
                        (str(err).splitlines() or [type(err).__name__])[0][:160])

    def _submit_update(self, rollouts: RolloutBatch, batch: Any) -> list:
        """The rows split evenly over the learners; every rank steps its optimizer once per iteration."""
        shards = split_into_shards(
            rollouts.group_prompt_ids(), rollouts.completion_ids, batch.advantages.tolist(), batch.loss_mask,
            len(self.learners), rollouts.sampling_logprobs,
        )
        return [learner.train_step.remote(shard) for learner, shard in zip(self.learners, shards)]

    def recover(self, dead: list[int], err: BaseException, step: int) -> None:
        """A new learner group, restored from the snapshot of the last completed step;
        :class:`RewindToCheckpoint` when the snapshot cannot be had."""
        log.warning("learner rank(s) %s died during step %d (%s); starting the learner group again", dead,
                    step + 1, (str(err).splitlines() or [type(err).__name__])[0][:160])
        self.faults.add("learner")
        # A rank that survived its failed update may still send its half-updated weights under the
        # step's version number, and a rollout worker may load them: the restored learners' versions
        # are a new line, which every worker loads again.
        self.lineage = new_lineage()
        self.workers.start_learners(self.cfg)
        self.connect()
        try:
            self.snapshots.restore(self.learners)
        except SnapshotLost as lost:
            raise RewindToCheckpoint(str(lost)) from None
        log.warning("learners restored from their snapshot of step %d; sending step %d again", self.snapshots.step,
                    step + 1)

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        self.calls.get([learner.save.remote(directory, self.version) for learner in self.learners])

    def load(self, directory: str, version: int) -> None:
        """Every rank loads ``directory``; the rollout workers get version ``version`` on :meth:`publish`."""
        self.calls.get([learner.load.remote(directory) for learner in self.learners])
        self.version = version

    def restart_lineage(self, version: int) -> None:
        """The learners as they are now are version ``version`` of a new line (after a rewind)."""
        self.version, self.lineage = version, new_lineage()
