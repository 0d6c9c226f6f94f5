"""The weight-sync interface: how a new policy version goes from the learners into the rollout engines.

A strategy has a lifecycle, run on both sides of the hand-off:

1. ``connect(side, index, topology)``, once, when the actors start: every learner rank and every
   rollout worker, knowing the whole :class:`SyncTopology`. A strategy that moves weights through a
   transport of its own (a collective broadcast from learner rank 0 into the engines, say) joins it
   here; the object-store strategies have nothing to join.
2. For each version: ``send(learner, version, put, live)`` on every learner rank (under ZeRO-3 the
   ranks gather the sharded weights together); rank 0 returns the :class:`~grpo_ray.wire.WeightUpdate`
   that the handle names. ``receive(engine, handle, fetch, live)`` on each rollout worker puts
   ``handle``'s version into its engine. ``live``: a synchronous hand-off, where both are submitted at
   once and every rollout worker receives, so a receiver can take part in a transfer while the sender
   is still sending; otherwise (async generation, a restarted worker) a worker receives on its own.
3. ``close()`` when the actor stops.

Learners and rollout workers build their strategy from ``sync.strategy`` when they are created, not
from what arrives. The object store stays every strategy's path for a worker that missed a transfer
(one Ray restarted, or one lagging behind in async mode): the handle's ``ref`` resolves to an update
it can apply on its own (:meth:`WeightSync.receive_from_store`).

Adding a strategy is one subclass registered in :data:`grpo_ray.sync.WEIGHT_SYNCS` and its name in
the config's ``SyncStrategy`` Literal (kept equal by ``tests/unit/test_config_names.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

if TYPE_CHECKING:
    from grpo_ray.learner.policy import PolicyLearner
    from grpo_ray.rollout.engines.base import RolloutEngine
    from grpo_ray.wire import WeightsHandle, WeightUpdate

Side = Literal["learner", "rollout"]


@dataclass(frozen=True)
class SyncTopology:
    """Who takes part in a weight sync: ``num_learners`` ranks send, ``num_rollouts`` workers receive.
    ``address``: a (host, port) rendezvous picked on learner rank 0's node, for strategies that open a
    transport of their own (None for the object store). ``ranks_per_rollout``: the engine processes of one
    rollout worker that join such a transport (vLLM's tensor-parallel workers). ``plan``: what learner
    rank 0 tells every member before they connect, for a strategy that ``needs_plan``
    (:meth:`WeightSync.plan`)."""

    num_learners: int
    num_rollouts: int
    address: Optional[tuple[str, int]] = None
    learners: tuple = ()  # the learner actors, for a worker that asks them for a version it missed
    ranks_per_rollout: int = 1
    plan: Any = None


class WeightSync(ABC):
    name: str = ""
    needs_address = False  # whether connect needs SyncTopology.address (a transport of the strategy's own)
    reaches_gpu_engines = True  # whether it can put weights into an engine on GPUs (vLLM's own processes)
    needs_plan = False  # whether connect needs SyncTopology.plan, made by learner rank 0 (plan)

    def plan(self, learner: "PolicyLearner") -> Any:
        """On learner rank 0, before anyone connects: what every member must know to join (default: none)."""
        return None

    def connect(self, side: Side, index: int, topology: SyncTopology, engine: Optional["RolloutEngine"] = None) -> None:
        """Join the strategy's transport as learner rank or rollout worker ``index`` (default: none). A
        rollout worker passes its ``engine``, for a transport that ends inside it."""
        self.side, self.index, self.topology = side, index, topology

    @abstractmethod
    def send(self, learner: "PolicyLearner", version: int, put: Callable[[Any], Any], live: bool = False
             ) -> Optional["WeightUpdate"]:
        """On every learner rank; rank 0 returns the update of ``version`` that the handle names."""

    def receive(self, engine: "RolloutEngine", handle: "WeightsHandle", fetch: Callable[[Any], Any],
                live: bool = False) -> None:
        """On a rollout worker: the weights of ``handle.version`` into ``engine``."""
        self.receive_from_store(engine, handle, fetch)

    def store(self, learner: "PolicyLearner", version: int, put: Callable[[Any], Any]) -> Optional["WeightUpdate"]:
        """On every learner rank: ``version`` (the one the learners hold) into the object store, for a
        worker that missed a transfer of the strategy's own. The object-store strategies put it there
        on every send."""
        raise NotImplementedError(f"sync strategy {self.name!r} puts every version in the object store when sent")

    def receive_from_store(self, engine: "RolloutEngine", handle: "WeightsHandle", fetch: Callable[[Any], Any]) -> None:
        """The object-store path: fetch the update ``handle`` names and apply it."""
        self.apply(engine, fetch(handle.ref), fetch)

    @abstractmethod
    def apply(self, engine: "RolloutEngine", update: "WeightUpdate", fetch: Callable[[Any], Any]) -> None:
        """Hand ``update`` to ``engine`` (its ``version`` is then the update's)."""

    def close(self) -> None:
        """Leave the transport."""
