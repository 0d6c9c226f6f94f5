"""RolloutWorker: a generation engine and a rollout kind in a Ray actor, tagged with the weights version it holds.

The constructor is light: it settles the device (CUDA when Ray assigned this actor GPUs, else CPU),
clears engine processes a previous incarnation left behind (``children.py``), and makes its weight-sync
strategy (``sync.strategy``, known from the start, so the worker can join a transfer before the sender
returns). The engine itself starts on :meth:`RolloutWorker.start`, or on first use after Ray restarts
the actor, so the driver can start every worker's engine at once and ask each what it will hand its
engine (:meth:`RolloutWorker.launch_plan`) without starting one.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import ray

from grpo_ray.actors.children import EngineChildren
from grpo_ray.rollout.engines.base import EngineSpec, RolloutEngine, create_engine, engine_class
from grpo_ray.rollout.kinds import KindSpec, RolloutKind, create_rollout_kind
from grpo_ray.sync import SyncTopology, create_weight_sync
from grpo_ray.wire import GenerationRequest, RolloutBatch, WeightsHandle


def assigned_device() -> str:
    """"cuda" when Ray assigned this actor GPUs, else "cpu" (Ray sets CUDA_VISIBLE_DEVICES to them)."""
    return "cuda" if ray.get_gpu_ids() else "cpu"


@ray.remote(concurrency_groups={"offers": 1})  # offer_weights runs while a generation does (in-flight updates)
class RolloutWorker:
    def __init__(self, spec: EngineSpec, kind: KindSpec = KindSpec(), sync: str = "lora") -> None:
        self.spec = spec.with_device(assigned_device())
        self.kind_spec = kind
        self.sync = create_weight_sync(sync)
        self.children = EngineChildren(ray.get_runtime_context().get_actor_id())
        self.reaped = self.children.reap()  # an earlier incarnation's engine processes hold its GPU
        self.engine: Optional[RolloutEngine] = None
        self.kind: Optional[RolloutKind] = None
        self.holds: Optional[tuple[str, int]] = None  # the (lineage, version) of the weights the engine serves
        self._offered: Optional[WeightsHandle] = None  # the newest version the learners published (in-flight updates)

    def launch_plan(self) -> dict[str, Any]:
        """Where this worker runs and what it hands its engine (read before, or instead of, starting it)."""
        kwargs, env = engine_class(self.spec.engine).launch_args(self.spec)
        return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "device": self.spec.device, "engine": self.spec.engine, "engine_kwargs": kwargs, "env": env,
                "node_id": ray.get_runtime_context().get_node_id(), "reaped": self.reaped}

    def start(self) -> bool:
        self._engine()
        return True

    def _engine(self) -> RolloutEngine:
        if self.engine is None:
            self.engine = create_engine(self.spec)
            self.kind = create_rollout_kind(self.kind_spec)
            self.children.record()
        return self.engine

    def version(self) -> int:
        return self._engine().version

    def info(self) -> dict[str, Any]:
        return self._engine().info()

    def connect_sync(self, topology: SyncTopology, index: int, strategy: Optional[str] = None) -> bool:
        """Join the weight-sync strategy's transport as rollout worker ``index``. ``strategy``: the run's,
        when it differs from the one this worker was made with (a worker reused by another run)."""
        self._use_strategy(strategy)
        if self.spec.device == "cuda" and not self.sync.reaches_gpu_engines:
            from grpo_ray.errors import UserError

            raise UserError(f"sync.strategy={self.sync.name}: this rollout worker's engine is on a GPU, which the "
                            "strategy's transport does not reach; use sync.strategy=full (or auto)")
        self.sync.connect("rollout", index, topology, engine=self._engine())
        return True

    def sync_connected(self) -> bool:
        """Whether this worker is in its strategy's transport (a strategy without one: always). False after
        Ray restarted the actor between two calls, which no failed call told the driver."""
        return getattr(self.sync, "connected", True)

    def _use_strategy(self, strategy: Optional[str]) -> None:
        if strategy and strategy != self.sync.name:
            self.sync.close()
            self.sync = create_weight_sync(strategy)
            self.holds = None

    def _kind(self, spec: Optional[KindSpec]) -> RolloutKind:
        """The rollout kind ``spec`` names (the worker's own when None), made once and kept."""
        self._engine()
        if spec is not None and spec != self.kind_spec:
            self.kind.close()
            self.kind_spec, self.kind = spec, create_rollout_kind(spec)
        return self.kind

    def receive_weights(self, handle: WeightsHandle, live: bool = False) -> float:
        """Hold ``handle``'s version (received only if this worker does not hold it); returns seconds.
        ``live``: part of a synchronous hand-off, every worker receiving at once (``grpo_ray.sync``)."""
        engine = self._engine()
        if handle.key == self.holds:
            return 0.0
        start = time.perf_counter()
        self._use_strategy(handle.strategy)
        self.sync.receive(engine, handle, ray.get, live=live)
        self.holds = handle.key
        return time.perf_counter() - start

    def sleep(self) -> bool:
        """Colocated with a learner rank: free the engine's GPU memory for the update (the engine wakes by
        itself, its weights for the next sync and the rest for the next generation)."""
        if self.spec.sleep_level:
            self._engine().sleep(self.spec.sleep_level)
        return True

    @ray.method(concurrency_group="offers")
    def offer_weights(self, handle: WeightsHandle) -> bool:
        """In-flight weight updates: a version the learners are publishing. This waits (beside the running
        generation, in its own concurrency group) until the learners have sent it, then leaves it for the
        generation to load between two decoding steps, or for the next generation. A version whose send
        failed (a learner died) is dropped: its shard carries the version to use."""
        try:
            ray.get(handle.ref)
        except Exception:  # noqa: BLE001 - the learner group recovers and sends the version again
            return False
        offered = self._offered
        if offered is None or offered.lineage != handle.lineage or handle.version > offered.version:
            self._offered = handle
        return True

    def _newer(self, handle: Optional[WeightsHandle]) -> bool:
        """Whether ``handle`` is a later version of the line this worker holds."""
        return handle is not None and self.holds is not None and handle.lineage == self.holds[0] and handle.version > self.holds[1]

    def _take_offer(self) -> None:
        """Between decoding steps: load the newest version offered (and sent) of the line this worker holds."""
        offered = self._offered
        if self._newer(offered):
            self.receive_weights(offered)

    def generate(self, request: GenerationRequest) -> RolloutBatch:
        """Trajectories under ``request.weights`` (received first unless this worker holds that version).
        ``request.inflight_updates``: a newer version of the same line that this worker holds, or that is
        offered while it generates, is used instead (``weights`` is then the oldest allowed)."""
        weights = request.weights
        if request.inflight_updates and weights is not None:
            offered = self._offered
            if offered is not None and offered.lineage == weights.lineage and offered.version > weights.version:
                weights = offered  # a newer version of the line, already sent
            if self.holds is not None and self.holds[0] == weights.lineage and self.holds[1] >= weights.version:
                weights = None  # the version held is as new or newer: never back to an older one
        load_s = self.receive_weights(weights) if weights is not None else 0.0
        engine = self._engine()
        engine.between_steps = self._take_offer if request.inflight_updates else None
        try:
            batch = self._kind(request.kind).rollout(engine, request)
        finally:
            engine.between_steps = None
        if load_s:
            batch.stats["load_weights_s"] = load_s
        return batch
