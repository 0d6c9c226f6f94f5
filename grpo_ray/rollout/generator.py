"""Generation outside a training run, for ``grpo-ray eval`` and ``grpo-ray generate``.

The same engine classes and rollout kinds the rollout actors hold (``grpo_ray.rollout.engines``,
``grpo_ray.rollout.kinds``), created in this process (no Ray). An adapter is applied exactly as
training syncs it, so what eval measures is what the rollout workers sampled from.
"""

from __future__ import annotations

import os
from typing import Optional

from grpo_ray.models.adapter_io import read_adapter_folder
from grpo_ray.models.paths import resolve_adapter_path, resolve_model_path
from grpo_ray.rollout.engines.base import ENGINES, EngineSpec, create_engine
from grpo_ray.rollout.kinds import KindSpec, create_rollout_kind
from grpo_ray.wire import GenerationRequest, LoraAdapter, RolloutBatch

# Standalone eval/generate/serve have the GPU to themselves (training shares it with the learner).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.85
# A model's full context (131,072 tokens for Llama-3.1) would size the KV cache past a 40-48 GB GPU;
# generate and serve default to this many tokens, eval to what its longest prompt needs.
DEFAULT_MAX_MODEL_LEN = 4096


def model_context_length(model_path: str, *, trust_remote_code: bool = False, revision: Optional[str] = None) -> Optional[int]:
    """The model's longest sequence (``max_position_embeddings``), when its config says."""
    from grpo_ray.models.paths import local_context_length

    local = local_context_length(model_path)
    if local:
        return local
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code, revision=revision)
    return getattr(cfg, "max_position_embeddings", None)


def default_max_model_len(model_path: str, cap: int = DEFAULT_MAX_MODEL_LEN) -> int:
    context = model_context_length(model_path)
    return min(context, cap) if context else cap


def load_adapter(spec: Optional[str]) -> Optional[LoraAdapter]:
    """``--adapter`` resolved (built-in name, PEFT folder, checkpoint or output dir) and read."""
    if not spec:
        return None
    return read_adapter_folder(resolve_adapter_path(spec), version=1)


class Generator:
    """A base model, optionally with one adapter, behind ``generate(GenerationRequest)``."""

    def __init__(
        self,
        model: str,
        *,
        max_model_len: int,
        engine: str = "vllm",
        dtype: str = "auto",
        adapter_config: Optional[dict] = None,
        cpu_kvcache_gb: float = 1.0,
        gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
        tensor_parallel_size: int = 1,
        trust_remote_code: bool = False,
        revision: Optional[str] = None,
        kind: Optional[KindSpec] = None,
    ) -> None:
        ENGINES.get(engine)  # an unknown name lists the known ones
        # stdout is for answers and tables: vLLM's engine chatter goes to stderr, warnings only
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        self.model_path = resolve_model_path(model)
        spec = EngineSpec(
            engine=engine, model_path=self.model_path, dtype=dtype, max_model_len=max_model_len,
            lora=adapter_config, max_lora_rank=int((adapter_config or {}).get("r", 8)), lora_apply="merge",
            gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
            cpu_kvcache_gb=cpu_kvcache_gb, trust_remote_code=trust_remote_code, revision=revision,
        )
        self.engine = create_engine(spec)
        self.kind = create_rollout_kind(kind or KindSpec())
        self.tokenizer = self.engine.tokenizer

    def apply_lora(self, adapter: LoraAdapter) -> None:
        self.engine.apply_lora(adapter)
        self.engine.version = adapter.version

    def generate(self, request: GenerationRequest, progress: bool = False) -> RolloutBatch:
        """Trajectories for ``request`` through the rollout kind, as training makes them."""
        return self.kind.rollout(self.engine, request, progress=progress)
