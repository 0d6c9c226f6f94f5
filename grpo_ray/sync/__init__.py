"""Weight-sync strategies: how a new policy version goes from the learners to the rollout engines.

``base.py`` is the interface and its lifecycle (connect, send, receive); each strategy is registered
here by name and chosen with ``sync.strategy``:

=============  ================================================================================
lora           the LoRA adapter through the object store (the default with LoRA)
full           every weight in buckets through the object store (the default under full fine-tuning)
broadcast      every weight from learner rank 0 over a gloo group of its own, the object store for
               whoever missed it (rollout engines in the worker's process: CPU)
vllm_transfer  every weight from learner rank 0 straight into the vLLM engines' models through vLLM's
               weight-transfer engines (NCCL on GPUs, gloo on CPU), the object store for whoever
               missed it
=============  ================================================================================

The driver's side (which versions go to which workers, queued behind the update) is
``grpo_ray.run.learner_group``.
"""

from grpo_ray.sync.base import SyncTopology, WeightSync
from grpo_ray.sync.broadcast import BroadcastSync
from grpo_ray.sync.object_store import FullSync, LoraSync
from grpo_ray.sync.vllm_transfer import VllmTransferSync
from grpo_ray.utils.registry import Registry

WEIGHT_SYNCS: Registry[type[WeightSync]] = Registry("weight sync strategy")
WEIGHT_SYNCS.register("lora")(LoraSync)
WEIGHT_SYNCS.register("full")(FullSync)
WEIGHT_SYNCS.register("broadcast")(BroadcastSync)
WEIGHT_SYNCS.register("vllm_transfer")(VllmTransferSync)


def create_weight_sync(name: str) -> WeightSync:
    return WEIGHT_SYNCS.get(name)()


__all__ = ["WEIGHT_SYNCS", "BroadcastSync", "FullSync", "LoraSync", "SyncTopology", "VllmTransferSync", "WeightSync",
           "create_weight_sync"]
