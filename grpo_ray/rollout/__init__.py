"""Generation engines behind one interface (vLLM, transformers), with no Ray in them.

The Ray actor in ``grpo_ray.actors.rollout`` holds one engine; tests and ``grpo-ray eval`` use
engines directly.
"""

from grpo_ray.rollout.types import GenerationRequest, RolloutBatch, SamplingConfig

__all__ = ["GenerationRequest", "RolloutBatch", "SamplingConfig"]
