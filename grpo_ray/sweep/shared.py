"""A shared-base sweep: every trial trains its LoRA adapter on one set of base-model actors.

The trials of a LoRA sweep differ only in their adapters, optimizer states and a few settings, so the
sweep starts the rollout workers and one learner once (:class:`SharedBase`) and every trial uses them:

- **Rollout.** A trial's generation requests carry the handle of its own weights version (lineage and
  version), and a rollout worker holding another applies the trial's adapter before it samples
  (``rollout.lora_apply``: merged into the base weights, or through the engine's LoRA kernels). Ray runs
  one call of an actor at a time, so the trials' batches take turns on each engine: time-multiplexed.
- **Learner.** The learner keeps one slot per trial (``grpo_ray.learner.slots``): the adapter, the
  optimizer, the scheduler's position and the RNG, swapped into its DeepSpeed engine when the trial
  calls. Every call of a trial names its slot (:class:`SlotBound`), so the trial's
  :class:`~grpo_ray.run.learner_group.LearnerGroup` is the solo run's, unchanged.
- **Reward workers** are shared too when no trial changes ``reward.*`` (they hold no state of a run);
  otherwise each trial starts its own. The trial's driver is its own, in the placement group Tune
  reserves for it (:func:`grpo_ray.cluster.trial_bundles` with the roles the trial starts itself).

A trial that ends (completed, stopped by ASHA, failed) gives its slot back (:class:`SlotCloser`, in the
sweep's driver, and the trial's own shutdown). A PBT exploit restarts the trial from another's checkpoint:
it opens its slot afresh and loads that checkpoint into it, as a solo trial loads it into its learners.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import ray
from ray import tune

from grpo_ray.cluster import Workers, check_cluster
from grpo_ray.config import GRPOConfig

log = logging.getLogger("grpo_ray.sweep")

TRIAL_ROLES = ("reward",)  # what a shared-base trial starts itself
SHARED_LEARNER_RESTARTS = 3  # a restarted learner holds no slots: each live trial reopens its own and restores it
_ACTIVE: Optional["SharedBase"] = None  # this driver's running shared base (SlotCloser)


@dataclass
class SharedBase:
    """The actors a shared-base sweep's trials share: the rollout workers and one learner, and the reward
    workers (and LM judge) too when no trial changes the rewards (they hold no state of a run)."""

    rollouts: list
    learner: Any
    rewards: Optional[list] = None  # None: each trial starts its own
    judges: list = field(default_factory=list)

    @classmethod
    def start(cls, cfg: GRPOConfig, *, rewards: bool = False) -> "SharedBase":
        workers = Workers(placement=check_cluster(cfg), learner_restarts=SHARED_LEARNER_RESTARTS)
        workers.place_rollouts(cfg)
        if rewards:
            workers.start_rewards(cfg)
        workers.start_learners(cfg)
        ray.get([worker.start.remote() for worker in workers.rollouts])  # every engine loads at once
        global _ACTIVE
        base = _ACTIVE = cls(workers.rollouts, workers.learners[0], workers.rewards if rewards else None, workers.judges)
        base._workers = workers
        return base

    def shutdown(self) -> None:
        global _ACTIVE
        workers = getattr(self, "_workers", None)
        if workers is not None:
            workers.shutdown()
        if _ACTIVE is self:
            _ACTIVE = None

    def __reduce__(self):  # trials get the handles, not the driver's placement groups
        return SharedBase, (self.rollouts, self.learner, self.rewards, self.judges)

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles whose actors the trials share."""
        return ("rollout", "learner") + (("reward",) if self.rewards is not None else ())


class _SlotMethod:
    def __init__(self, method: Any, slot: str) -> None:
        self.method, self.slot = method, slot

    def remote(self, *args, **kwargs):
        return self.method.remote(*args, slot=self.slot, **kwargs)

    def options(self, **options) -> "_SlotMethod":
        return _SlotMethod(self.method.options(**options), self.slot)


class SlotBound:
    """A shared learner as one run sees it: its calls that touch the policy name the run's slot, and its
    liveness probe (``__ray_ready__``) asks whether the learner still holds the slot, so a learner that
    Ray restarted (holding none) counts as dead to the run, which then reopens its slot and restores
    its snapshot into it (``LearnerGroup.recover``), as it would start a new learner of its own."""

    SLOT_METHODS = frozenset({"train_step", "send_weights", "store_weights", "snapshot", "restore", "logprobs",
                              "save", "load", "check_slot"})

    def __init__(self, actor: Any, slot: str) -> None:
        self.actor, self.slot = actor, slot

    def __getattr__(self, name: str) -> Any:
        if name in ("actor", "slot"):  # not set yet (unpickling)
            raise AttributeError(name)
        if name == "__ray_ready__":
            name = "check_slot"
        method = getattr(self.actor, name)
        return _SlotMethod(method, self.slot) if name in self.SLOT_METHODS else method


@dataclass
class TrialWorkers(Workers):
    """One trial's actors in a shared-base sweep: the shared rollout workers, its slot on the shared
    learner, and reward workers of its own in the trial's placement group."""

    shared: Optional[SharedBase] = None
    slot: str = ""
    trial_roles: tuple[str, ...] = TRIAL_ROLES
    opened: bool = field(default=False)
    rollouts_shared: bool = True  # the trial's weights go to the rollout workers with its shards (LearnerGroup)

    def place_rollouts(self, cfg: GRPOConfig) -> list:
        self.rollouts = list(self.shared.rollouts)
        return self.rollouts

    def start_rewards(self, cfg: GRPOConfig) -> list:
        """The sweep's reward workers when it shares them, else the trial's own."""
        if self.shared.rewards is None:
            return super().start_rewards(cfg)
        self.rewards, self.judges = list(self.shared.rewards), list(self.shared.judges)
        return self.rewards

    def start_learners(self, cfg: GRPOConfig) -> list:
        """This trial's slot on the shared learner, fresh (a trial restarted by Tune starts over, or loads
        its checkpoint into it)."""
        from grpo_ray.actors.learner_worker import learner_settings

        ray.get(self.shared.learner.open_slot.remote(self.slot, learner_settings(cfg)))
        self.opened = True
        self.learners = [SlotBound(self.shared.learner, self.slot)]
        return self.learners

    place_learners = start_learners

    def stop_learners(self) -> None:
        if self.opened:
            try:
                ray.get(self.shared.learner.close_slot.remote(self.slot), timeout=60)
            except ray.exceptions.RayError as err:  # the shared learner is gone: nothing to give back
                log.warning("could not close slot %s on the shared learner: %s", self.slot, type(err).__name__)
            self.opened = False
        self.learners = []

    def shutdown(self) -> None:
        self.stop_learners()
        if self.shared.rewards is None:
            self.rewards = self._release(self.rewards + self.judges, "reward")
        self.rewards, self.judges, self.rollouts, self.groups = [], [], [], {}


class SlotCloser(tune.Callback):
    """Gives an ended trial's slot back on the shared learner (its own shutdown may not have run: Tune
    stops a trial by ending its process). It holds no handle: Tune pickles its callbacks with the
    experiment, and a resumed sweep has new actors, so it asks for the sweep's current ones."""

    def _close(self, trial) -> None:
        if _ACTIVE is not None:
            _ACTIVE.learner.close_slot.remote(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial)
