"""grpo_ray: GRPO fine-tuning of language models for reasoning, on Ray.

Kept import-free on purpose: ``import grpo_ray.algo`` must not pull in ray, vllm or deepspeed.
"""

__version__ = "0.1.0"
