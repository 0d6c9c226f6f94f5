"""RolloutWorker: a generation engine in a Ray actor, tagged with the adapter version it holds."""

from __future__ import annotations

from typing import Any, Optional

import ray

from grpo_ray.rollout.adapters import AdapterPayload
from grpo_ray.rollout.types import GenerationRequest, RolloutBatch


@ray.remote
class RolloutWorker:
    """Holds one engine. ``version`` is -1 until the first adapter arrives (e.g. after a restart)."""

    def __init__(self, engine: str, model_path: str, engine_kwargs: dict[str, Any]) -> None:
        if engine == "vllm":
            from grpo_ray.rollout.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(model_path, **engine_kwargs)
        elif engine == "hf":
            from grpo_ray.rollout.hf_engine import HFEngine

            self.engine = HFEngine(model_path, **engine_kwargs)
        else:
            raise ValueError(f"rollout.engine={engine!r}: expected 'vllm' or 'hf'")

    def version(self) -> int:
        return self.engine.version

    def merge_path(self) -> Optional[str]:
        """How the vLLM engine's last merged sync replaced its weights (None for other engines)."""
        return getattr(self.engine, "merge_path", None)

    def load_adapter(self, payload: AdapterPayload) -> float:
        return self.engine.load_adapter(payload)

    def generate(self, request: GenerationRequest, adapter: Optional[AdapterPayload] = None) -> RolloutBatch:
        """Completions under ``adapter`` (loaded first unless this worker holds that version already)."""
        load_s = 0.0
        if adapter is not None and adapter.version != self.engine.version:
            load_s = self.engine.load_adapter(adapter)
        batch = self.engine.generate(request)
        if load_s:
            batch.stats["load_adapter_s"] = load_s
        return batch

    def score(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[list[float]]:
        return self.engine.score(prompt_ids, completion_ids)
