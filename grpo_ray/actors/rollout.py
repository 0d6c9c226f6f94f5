"""RolloutWorker: a generation engine in a Ray actor, tagged with the weights version it holds.

The constructor is light: it settles the device (CUDA when Ray assigned this actor GPUs, else CPU),
clears engine processes a previous incarnation left behind (``children.py``) and keeps the spec. The
engine itself starts on :meth:`RolloutWorker.start`, or on first use after Ray restarts the actor, so
the driver can start every worker's engine at once and ask each what it will hand its engine
(:meth:`RolloutWorker.launch_plan`) without starting one.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import ray

from grpo_ray.actors.children import EngineChildren
from grpo_ray.rollout.engine import EngineSpec, RolloutEngine, create_engine, engine_class
from grpo_ray.sync import WEIGHT_SYNCS
from grpo_ray.wire import GenerationRequest, RolloutBatch, WeightsHandle


def assigned_device() -> str:
    """"cuda" when Ray assigned this actor GPUs, else "cpu" (Ray sets CUDA_VISIBLE_DEVICES to them)."""
    return "cuda" if ray.get_gpu_ids() else "cpu"


@ray.remote
class RolloutWorker:
    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec.with_device(assigned_device())
        self.children = EngineChildren(ray.get_runtime_context().get_actor_id())
        self.reaped = self.children.reap()  # an earlier incarnation's engine processes hold its GPU
        self.engine: Optional[RolloutEngine] = None
        self.holds: Optional[tuple[str, int]] = None  # the (lineage, version) of the weights the engine serves

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
            self.children.record()
        return self.engine

    def version(self) -> int:
        return self._engine().version

    def info(self) -> dict[str, Any]:
        return self._engine().info()

    def load_weights(self, handle: WeightsHandle) -> float:
        """Hold ``handle``'s version (fetching its update only if this worker does not); returns seconds."""
        engine = self._engine()
        if handle.key == self.holds:
            return 0.0
        start = time.perf_counter()
        update = ray.get(handle.ref)
        WEIGHT_SYNCS.get(update.kind)().apply(engine, update, ray.get)
        self.holds = handle.key
        return time.perf_counter() - start

    def generate(self, request: GenerationRequest) -> RolloutBatch:
        """Completions under ``request.weights`` (loaded first unless this worker holds that version)."""
        load_s = self.load_weights(request.weights) if request.weights is not None else 0.0
        batch = self._engine().generate(request)
        if load_s:
            batch.stats["load_weights_s"] = load_s
        return batch

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[list[float]]:
        return self._engine().score(prompt_ids, completion_ids)
