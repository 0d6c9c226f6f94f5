"""Full weights from learner rank 0 straight into the vLLM engines' models, through vLLM's
weight-transfer engines: no object store, no safetensors, no host copy on GPUs.

vLLM (0.32) ships weight-transfer engines built for RL trainers (``vllm.distributed.weight_transfer``).
Each inference worker joins a process group with the trainer, and each version is a
``start_weight_update`` / ``update_weights`` / ``finish_weight_update`` on the engine while the trainer
broadcasts the bytes; the engine loads them through its layerwise reload into the running model. The
trainer is rank 0; the engines' workers follow (worker ``i``'s tensor-parallel ranks at
``1 + i * ranks_per_rollout``).

This strategy drives that protocol from grpo_ray's own lifecycle (``grpo_ray.sync.base``), where the
driver already runs both halves of a synchronous hand-off at once:

- **plan** (learner rank 0, before anyone connects): the backend and every weight's name, dtype and
  shape, in the order rank 0 sends them. The engines need them to size what they receive.
- **connect**: rank 0 opens its end (:class:`NcclEndpoint` or :class:`GlooEndpoint`) while every rollout
  worker's engine joins (``init_weight_transfer_engine``).
- **send** (live): rank 0 iterates the weights where they are (``PolicyLearner.full_state(on_device=True)``:
  the GPU tensors themselves, or under ZeRO-3 each gathered weight in turn) and broadcasts them packed.
  The other ranks only join ZeRO-3's gathers and copy nothing.
- **receive** (live): the engine's start/update/finish, the bytes arriving meanwhile.

Backends: ``nccl`` when the learners compute on GPUs (vLLM's own engine on the rollout side and its
``packed_nccl_broadcast_producer`` on rank 0, with CUDA streams, double-buffered); ``grpo_ray_gloo`` when
they compute on CPU (``grpo_ray.rollout.engines.vllm_transfer_gloo``: the same engine with a gloo wire;
what CI runs). Learners and engines must be on the same kind of device.

Everything that is not a synchronous hand-off to every worker goes through the object store, as with
``broadcast`` (this class extends it): a restarted or lagging worker asks the learners to put the
version it needs there, and a broken transfer is connected again before the next hand-off. A gloo
transfer that loses a member fails after ``timeout_s``; NCCL has no such timeout, so on GPUs a rollout
worker that dies in the middle of a transfer leaves rank 0 waiting (docs/gpu_clusters.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import torch

from grpo_ray.errors import UserError
from grpo_ray.rollout.engines.vllm_args import TRANSFER_BACKEND_CPU, TRANSFER_BACKEND_GPU
from grpo_ray.sync.base import SyncTopology
from grpo_ray.sync.broadcast import BroadcastSync, GlooGroup, TransportError, pack
from grpo_ray.sync.object_store import buckets_of

NCCL, GLOO = TRANSFER_BACKEND_GPU, TRANSFER_BACKEND_CPU  # the backends the engines are started with


@dataclass(frozen=True)
class TransferPlan:
    """What every member must agree on before the first byte: the backend, the weights
    (``(name, dtype, shape)`` in sending order), the bucket size and how long a gloo member may wait."""

    backend: str
    params: tuple
    bucket_bytes: int
    timeout_s: float

    def init_info(self, address: tuple[str, int], rank_offset: int, world_size: int) -> dict[str, Any]:
        """``init_weight_transfer_engine``'s argument for the engine whose first worker is ``rank_offset``."""
        info = {"master_address": address[0], "master_port": address[1], "rank_offset": rank_offset,
                "world_size": world_size, "packed": True, "packed_buffer_size_bytes": self.bucket_bytes}
        if self.backend == GLOO:
            info["timeout_s"] = self.timeout_s
        return info

    def update_info(self) -> dict[str, list]:
        """``update_weights``' argument: what the engine is to receive, in order."""
        return {"names": [p[0] for p in self.params], "dtype_names": [p[1] for p in self.params],
                "shapes": [list(p[2]) for p in self.params]}


def world_size(topology: SyncTopology) -> int:
    return 1 + topology.num_rollouts * topology.ranks_per_rollout


class NcclEndpoint:
    """Learner rank 0's end of vLLM's NCCL weight-transfer group (rank 0 of it), on its current GPU."""

    def __init__(self, address: tuple[str, int], size: int, bucket_bytes: int) -> None:
        from vllm.distributed.weight_transfer.nccl_common import trainer_init

        self.bucket_bytes = bucket_bytes
        self.comm = trainer_init({"master_address": address[0], "master_port": address[1], "world_size": size})

    def send(self, state: Iterable[tuple[str, torch.Tensor]]) -> int:
        from vllm.distributed.weight_transfer.packed_tensor import packed_nccl_broadcast_producer

        sent = [0]

        def counted(item):
            sent[0] += item[1].numel() * item[1].element_size()
            return item[1]

        packed_nccl_broadcast_producer(iterator=iter(state), group=self.comm, src=0, post_iter_func=counted,
                                       buffer_size_bytes=self.bucket_bytes)
        torch.cuda.current_stream().synchronize()  # the next update may change the weights just sent
        return sent[0]

    def close(self) -> None:
        self.comm.destroy()


class GlooEndpoint:
    """Learner rank 0's end of the ``grpo_ray_gloo`` group: the buckets the engines cut from the plan."""

    def __init__(self, address: tuple[str, int], size: int, bucket_bytes: int, timeout_s: float) -> None:
        self.bucket_bytes = bucket_bytes
        self.group = GlooGroup(address, 0, size, timeout_s)

    def send(self, state: Iterable[tuple[str, torch.Tensor]]) -> int:
        sent = 0
        for bucket in buckets_of(state, self.bucket_bytes):
            _, flat = pack(bucket)
            self.group.broadcast(flat)
            sent += flat.numel()
        return sent

    def close(self) -> None:
        self.group.close()


class EngineEnd:
    """A rollout worker's end: its engine, joined to the group."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.leave_weight_transfer()


def checked(state: Iterable[tuple[str, Optional[torch.Tensor]]], params: tuple) -> Iterator[tuple[str, torch.Tensor]]:
    """Rank 0's weights as the plan announced them: a weight that differs in name, dtype or shape (or one
    too many or too few) would be cut into the engines' buckets wrongly, so it is an error here."""
    expected = iter(params)
    for name, tensor in state:
        got = (name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape))
        want = next(expected, None)
        if want is None or (want[0], want[1], list(want[2])) != got:
            raise RuntimeError(f"vllm_transfer: learner rank 0 is sending {got}, but the plan the engines hold says "
                               f"{want}; the policy's weights changed since the transfer was connected")
        yield name, tensor
    missing = next(expected, None)
    if missing is not None:
        raise RuntimeError(f"vllm_transfer: the plan announced {missing[0]!r}, which learner rank 0 does not hold")


class VllmTransferSync(BroadcastSync):
    """Full weights through vLLM's weight-transfer engines (module docstring)."""

    name = "vllm_transfer"
    needs_plan = True
    reaches_gpu_engines = True

    def plan(self, learner) -> TransferPlan:
        backend = NCCL if torch.device(learner.device).type == "cuda" else GLOO
        return TransferPlan(backend, tuple(tuple(p) for p in learner.full_state_metadata()), self.bucket_bytes,
                            self.timeout_s)

    def _open(self, side, index, topology: SyncTopology, engine):
        plan: TransferPlan = topology.plan
        if side == "learner":
            if plan.backend == NCCL:
                return NcclEndpoint(topology.address, world_size(topology), plan.bucket_bytes)
            return GlooEndpoint(topology.address, world_size(topology), plan.bucket_bytes, plan.timeout_s)
        have = getattr(engine, "weight_transfer_backend", None)
        if have != plan.backend:
            raise UserError(f"sync.strategy=vllm_transfer: the learners send over {plan.backend} "
                            f"({'GPUs' if plan.backend == NCCL else 'CPU'}), but this rollout worker's engine "
                            + (f"receives over {have}; put the learners and the rollout engines both on GPUs or "
                               "both on CPU" if have else "was started without vLLM's weight transfer (rollout.engine "
                               "must be vllm, started for this strategy)"))
        engine.join_weight_transfer(plan.init_info(topology.address, 1 + index * topology.ranks_per_rollout,
                                                   world_size(topology)))
        return EngineEnd(engine)

    def _state(self, learner):
        return learner.full_state(on_device=True)

    def _transmit(self, state) -> int:
        return self.group.send(checked(state, self.topology.plan.params))

    def _take(self, engine) -> None:
        try:
            engine.receive_weight_transfer(self.topology.plan.update_info())
        except TransportError:
            raise
        except Exception as err:  # noqa: BLE001 - vLLM's worker processes re-raise the wire's error as their own
            raise TransportError(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
