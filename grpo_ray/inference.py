"""One generation engine outside a training run, for ``grpo-ray eval`` and ``grpo-ray generate``.

The same engine classes the rollout actors hold, created in this process (no Ray): vLLM by default,
transformers as the fallback. An adapter is applied exactly as training syncs it, so what eval
measures is what the rollout workers sampled from.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from grpo_ray.models.paths import resolve_adapter_path, resolve_model_path
from grpo_ray.rollout.adapters import AdapterPayload, read_adapter_folder

ENGINES = ("vllm", "hf")


def model_context_length(model_path: str, *, trust_remote_code: bool = False, revision: Optional[str] = None) -> Optional[int]:
    """The model's longest sequence (``max_position_embeddings``), when its config says."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code, revision=revision)
    return getattr(cfg, "max_position_embeddings", None)


def load_adapter_payload(spec: Optional[str]) -> Optional[AdapterPayload]:
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
        lora_rank: int = 8,
        cpu_kvcache_gb: float = 1.0,
        trust_remote_code: bool = False,
        revision: Optional[str] = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
        # stdout is for answers and tables: vLLM's engine chatter goes to stderr, warnings only
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        self.model_path = resolve_model_path(model)
        self.engine_name = engine
        if engine == "vllm":
            from grpo_ray.rollout.vllm_engine import VLLMEngine

            self.engine: Any = VLLMEngine(
                self.model_path, dtype=dtype, max_model_len=max_model_len, max_lora_rank=lora_rank,
                cpu_kvcache_gb=cpu_kvcache_gb, trust_remote_code=trust_remote_code, revision=revision,
                weight_sync="merge",
            )
        else:
            from grpo_ray.rollout.hf_engine import HFEngine

            self.engine = HFEngine(self.model_path, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision)
        self.tokenizer = self.engine.tokenizer

    def load_adapter(self, payload: AdapterPayload) -> None:
        self.engine.load_adapter(payload)

    def generate(self, request, progress: bool = False):
        if self.engine_name == "vllm":
            return self.engine.generate(request, progress=progress)
        return self.engine.generate(request)


def adapter_rank(payload: Optional[AdapterPayload]) -> int:
    return int(payload.peft_config.get("r", 8)) if payload is not None else 8

