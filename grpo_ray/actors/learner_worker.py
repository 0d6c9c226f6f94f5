"""LearnerWorker: one data-parallel rank of the DeepSpeed policy learner, as a Ray actor.

Two-phase start: every rank is created first (light: it only keeps its settings); rank 0 then names
an address and a free port, and all ranks build the model and join the process group together in
``setup`` (joining blocks until all have arrived). The device is what Ray assigned: CUDA and NCCL when
the actor holds GPUs, CPU and gloo when it holds none. In between, the driver has every rank on a node
see all of the node's learner GPUs (``use_gpus``; ``grpo_ray.cluster.share_node_gpus``), so nothing in
this actor may start CUDA before that (CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when it starts). The
actor gets the sections of the config it needs, not the whole config, so nothing else (reward files,
say) is resolved on the learner's node.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import ray

from grpo_ray.config import GRPOConfig
from grpo_ray.learner.slots import SlotSettings
from grpo_ray.sync import SyncTopology, create_weight_sync
from grpo_ray.wire import TrainShard, WeightUpdate

if TYPE_CHECKING:
    from grpo_ray.cluster import NodeGPUs
    from grpo_ray.learner.slots import LearnerSlots


@dataclass(frozen=True)
class LearnerSettings(SlotSettings):
    """What a learner rank is built from: a run's slot settings, plus the seed of its initialisation and
    its weight-sync strategy."""

    seed: int
    sync: str  # the weight-sync strategy (grpo_ray.sync)


def learner_settings(cfg: GRPOConfig) -> LearnerSettings:
    return LearnerSettings(cfg.model, cfg.learner, cfg.algo, cfg.trainer.steps, cfg.rollout_batch_size,
                           cfg.rollout.max_completion_tokens, cfg.rollout.temperature, cfg.trainer.seed,
                           cfg.sync_strategy)


@ray.remote
class LearnerWorker:
    def __init__(self, settings: LearnerSettings, rank: int, world_size: int) -> None:
        self.settings = settings
        self.rank, self.world_size = rank, world_size
        self.device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.sync = create_weight_sync(settings.sync)
        self.learner = None
        self.slots: Optional[LearnerSlots] = None  # runs sharing this learner (open_slot), each call naming its own

    def rendezvous_address(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def gpus(self) -> tuple[str, list[str]]:
        """(this rank's node id, the ids of the GPUs Ray gave it)."""
        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]

    def use_gpus(self, shared: NodeGPUs) -> bool:
        """See every learner GPU of this node and compute on this rank's own (before CUDA starts here)."""
        os.environ.update(CUDA_VISIBLE_DEVICES=",".join(shared.visible), LOCAL_RANK=str(shared.local_rank),
                          LOCAL_WORLD_SIZE=str(shared.local_world_size))
        import torch

        if torch.cuda.is_available():  # not on a CPU build of torch (fake GPUs in tests)
            torch.cuda.set_device(shared.device_index)  # PolicyLearner computes on torch.cuda.current_device()
        return True

    def gpu_memory(self) -> int | None:
        """Bytes of memory on this rank's CUDA device; None without one."""
        import torch

        if self.device != "cuda" or not torch.cuda.is_available():
            return None
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory

    def launch_plan(self) -> dict[str, Any]:
        """Where this rank runs and what it hands DeepSpeed (read before, or instead of, ``setup``)."""
        from grpo_ray.learner.policy import deepspeed_config, torch_dtype

        s = self.settings
        dtype = torch_dtype(s.model.dtype, self.device)
        return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "local_rank": os.environ.get("LOCAL_RANK"), "local_world_size": os.environ.get("LOCAL_WORLD_SIZE"),
                "device": self.device, "backend": "nccl" if self.device == "cuda" else "gloo", "dtype": str(dtype),
                "deepspeed": deepspeed_config(s.learner, s.rows_per_step // self.world_size, dtype),
                "node_id": ray.get_runtime_context().get_node_id()}

    def setup(self, master_addr: str, master_port: int) -> bool:
        from grpo_ray.learner.policy import PolicyLearner

        s = self.settings
        self.learner = PolicyLearner(
            s.model, s.learner, s.algo, total_steps=s.total_steps, rows_per_step=s.rows_per_step // self.world_size,
            max_completion_tokens=s.max_completion_tokens, temperature=s.temperature, rank=self.rank,
            world_size=self.world_size, master_addr=master_addr, master_port=master_port, seed=s.seed,
            device=self.device,
        )
        return True

    # -- runs sharing this learner (grpo_ray.learner.slots): every call below may name its run's slot --
    def open_slot(self, slot: str, settings: LearnerSettings) -> bool:
        """Hold another run's trainable state under ``slot``, starting fresh (a sweep's trials sharing one
        base model: ``grpo_ray.sweep.shared``)."""
        from grpo_ray.learner.slots import LearnerSlots

        if self.learner is None:  # restarted by Ray: a lone rank builds its model again on its own
            if self.world_size != 1:
                raise RuntimeError("a learner shared by several runs is one rank; this one has not been set up")
            self.setup(*self.rendezvous_address())
        if self.slots is None:
            self.slots = LearnerSlots(self.learner, self.settings)
        self.slots.open(slot, settings)
        return True

    def close_slot(self, slot: str) -> bool:
        if self.slots is not None:
            self.slots.close(slot)
        return True

    def check_slot(self, slot: Optional[str] = None) -> bool:
        """Raises unless this learner holds ``slot`` (a run's liveness probe: grpo_ray.sweep.shared.SlotBound)."""
        if slot is not None and (self.slots is None or slot not in self.slots):
            raise KeyError(f"this learner holds no slot {slot!r} (it was restarted, or the slot was closed)")
        return True

    def slot_stats(self) -> dict[str, Any]:
        """The open slots, and how many times a call found another slot than the one in use (each a restore)."""
        if self.slots is None:
            return {"open": [], "switches": 0}
        return {"open": sorted(self.slots.settings), "switches": self.slots.switches}

    def _at(self, slot: Optional[str]):
        """The learner, holding ``slot``'s state when a slot is named."""
        if slot is None:
            return self.learner
        if self.slots is None:
            raise KeyError(f"no slot {slot!r} on this learner: no run has opened one")
        return self.slots.use(slot)

    def _changed(self, slot: Optional[str]) -> None:
        if slot is not None:
            self.slots.changed()

    def train_step(self, shard: TrainShard, slot: Optional[str] = None) -> dict[str, float]:
        metrics = self._at(slot).train_step(shard)
        self._changed(slot)
        return metrics

    def free_cached_memory(self) -> bool:
        """Colocated with a rollout engine: hand the GPU memory PyTorch keeps cached after an update back to
        the device, for the engine to wake into."""
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        return True

    def sync_plan(self, slot: Optional[str] = None) -> Any:
        """Rank 0: what every member of the weight-sync strategy's transport must know before joining it."""
        return self.sync.plan(self._at(slot))

    def connect_sync(self, topology: SyncTopology) -> bool:
        """Join the weight-sync strategy's transport as this rank."""
        self.sync.connect("learner", self.rank, topology)
        return True

    def send_weights(self, version: int, live: bool = False, slot: Optional[str] = None) -> Optional[WeightUpdate]:
        """Version ``version`` of the policy for the rollout engines (every rank joins; rank 0 returns the
        update the handle names). ``live``: every rollout worker is receiving now (``grpo_ray.sync``)."""
        return self.sync.send(self._at(slot), version, ray.put, live=live)

    def store_weights(self, version: int, slot: Optional[str] = None) -> Optional[WeightUpdate]:
        """``version`` (the one this learner holds) into the object store, for a rollout worker that missed
        the strategy's own transfer of it (every rank joins)."""
        return self.sync.store(self._at(slot), version, ray.put)

    @ray.method(num_returns=2)
    def snapshot(self, slot: Optional[str] = None) -> tuple[dict[str, float], dict[str, bytes]]:
        """(seconds and bytes, this rank's trainable state): both returned to the driver, which owns them,
        so the state outlives this process in the node's object store."""
        start = time.perf_counter()
        files = self.learner.snapshot() if slot is None else self.slots.snapshot(slot)
        return {"seconds": time.perf_counter() - start, "bytes": float(sum(map(len, files.values())))}, files

    def restore(self, files: dict[str, bytes], slot: Optional[str] = None) -> int:
        learner = self._at(slot)
        learner.restore(files)
        self._changed(slot)
        return learner.steps_done

    def logprobs(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], reference: bool = False,
                 slot: Optional[str] = None):
        """Each completion token's logprob under the policy (or the reference), at temperature 1."""
        return self._at(slot).logprobs(prompt_ids, completion_ids, reference=reference)

    def save(self, directory: str, version: int, slot: Optional[str] = None) -> bool:
        self._at(slot).save(directory, version)
        return True

    def load(self, directory: str, slot: Optional[str] = None) -> int:
        learner = self._at(slot)
        learner.load(directory)
        self._changed(slot)
        return learner.steps_done
