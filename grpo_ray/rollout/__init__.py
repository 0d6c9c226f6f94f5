"""Generation engines behind one interface (``engine.RolloutEngine``: vLLM, transformers), with no Ray
in them. The Ray actor in ``grpo_ray.actors.rollout`` holds one engine; ``grpo-ray eval`` / ``generate``
and the tests use engines directly. The objects they exchange are in ``grpo_ray.wire``.
"""

from grpo_ray.rollout.engine import ENGINES, EngineSpec, RolloutEngine, create_engine

__all__ = ["ENGINES", "EngineSpec", "RolloutEngine", "create_engine"]
