"""grpo_ray's vLLM plugin (the ``vllm.general_plugins`` entry point in pyproject.toml): vLLM runs it in
every process it starts (the engine core, each worker), so what it registers exists wherever vLLM
builds an engine.

It registers one weight-transfer backend, ``grpo_ray_gloo``: vLLM's NCCL weight-transfer engine with the
wire replaced by a gloo group (``vllm_transfer_gloo.py``), for rollout engines on CPU. It is registered
by module path, so that module is imported only by an engine that uses it.
"""

from __future__ import annotations

GLOO_BACKEND = "grpo_ray_gloo"


def register() -> None:
    """Register grpo_ray's weight-transfer backend with vLLM (safe to call more than once)."""
    from vllm.distributed.weight_transfer import WeightTransferEngineFactory

    try:
        WeightTransferEngineFactory.register_engine(GLOO_BACKEND, "grpo_ray.rollout.engines.vllm_transfer_gloo",
                                                    "GlooWeightTransferEngine")
    except ValueError:  # registered already in this process
        pass
