"""Rollout without Ray: engines (``engines/``: vLLM, transformers) that sample tokens under the current
weights, and rollout kinds (``kinds/``: single-turn, ...) that drive an engine to turn prompts into
trajectories. The Ray actor in ``grpo_ray.actors.rollout_worker`` holds one engine and one kind;
``grpo-ray eval`` / ``generate`` hold them in-process (``generator.py``). The objects they exchange
are in ``grpo_ray.wire``.
"""
