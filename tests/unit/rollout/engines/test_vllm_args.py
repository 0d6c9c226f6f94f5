"""What each platform hands to vLLM (no vLLM started): the rollout engine and the server share one
table of platform settings, and tensor parallelism uses vLLM's multiprocessing executor."""

from __future__ import annotations

import pytest

from grpo_ray.config import load_config
from grpo_ray.rollout.engines.base import ENGINES, EngineSpec, engine_spec
from grpo_ray.rollout.engines.vllm_args import cli_flags, engine_kwargs, platform_settings, vllm_max_lora_rank
from grpo_ray.serve.options import ServeOptions, vllm_server_args, vllm_server_env

pytestmark = pytest.mark.unit


def spec(**kw) -> EngineSpec:
    return EngineSpec("vllm", "/models/m", **kw)


def test_cpu_runs_in_process_eager_with_whole_prefills_and_a_bounded_kv_cache() -> None:
    kwargs, env = engine_kwargs(spec(cpu_kvcache_gb=2.4), on_cpu=True)
    assert kwargs["dtype"] == "float32" and kwargs["enforce_eager"] is True and kwargs["enable_chunked_prefill"] is False
    assert kwargs["distributed_executor_backend"] == "uni" and "gpu_memory_utilization" not in kwargs
    assert env == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def test_gpu_tensor_parallel_uses_the_multiprocessing_executor() -> None:
    """Inside a Ray actor vLLM would pick its Ray executor from the actor's placement group, which
    refuses a bundle of more than one GPU; "mp" runs the TP workers on the GPUs the actor holds."""
    kwargs, env = engine_kwargs(spec(tensor_parallel_size=2, gpu_memory_utilization=0.7), on_cpu=False)
    assert kwargs["distributed_executor_backend"] == "mp" and kwargs["tensor_parallel_size"] == 2
    # the learner's dtype for "auto" (bf16 on GPUs), not vLLM's (the checkpoint's: fp16 for an fp16 model)
    assert kwargs["gpu_memory_utilization"] == 0.7 and kwargs["dtype"] == "bfloat16"
    assert "enforce_eager" not in kwargs and "enable_chunked_prefill" not in kwargs and env == {}
    assert engine_kwargs(spec(), on_cpu=False)[0]["distributed_executor_backend"] == "uni"


def test_lora_kernels_only_in_lora_mode_and_the_merge_extension_always() -> None:
    merged, _ = engine_kwargs(spec(lora={"r": 24}, max_lora_rank=24), on_cpu=False)
    assert "enable_lora" not in merged and merged["worker_extension_cls"].endswith("MergedLoRAExtension")
    kernels, _ = engine_kwargs(spec(lora={"r": 24}, max_lora_rank=24, lora_apply="lora"), on_cpu=False)
    assert kernels["enable_lora"] is True and kernels["max_lora_rank"] == 32 and kernels["max_loras"] == 2
    with pytest.raises(ValueError, match="up to 512"):
        vllm_max_lora_rank(600)


def test_colocated_engines_sleep_on_gpus_at_the_level_the_sync_allows() -> None:
    """vLLM's sleep mode is turned on only where it exists (GPUs); full fine-tuning sleeps at level 2, whose
    discarded weights every sync rewrites; LoRA at level 1, keeping the base its merge needs."""
    lora = engine_spec(load_config(None, ["trainer.colocate=true"]), "/m")
    full = engine_spec(load_config(None, ["trainer.colocate=true", "model.lora.enabled=false"]), "/m")
    apart = engine_spec(load_config(None, []), "/m")
    assert (lora.sleep_level, full.sleep_level, apart.sleep_level) == (1, 2, 0)
    assert engine_kwargs(lora, on_cpu=False)[0]["enable_sleep_mode"] is True
    assert "enable_sleep_mode" not in engine_kwargs(lora, on_cpu=True)[0]  # vllm-cpu has no sleep mode
    assert "enable_sleep_mode" not in engine_kwargs(apart, on_cpu=False)[0]


def test_engines_join_weight_transfer_only_for_vllm_transfer_nccl_on_gpus_and_grpo_rays_gloo_on_cpu() -> None:
    """Only runs that sync over vLLM's weight transfer start the engine with it (it changes which MoE
    kernels vLLM may pick); the backend follows the platform, and the CPU one is grpo_ray's plugin's."""
    from importlib.metadata import entry_points

    from grpo_ray.rollout.engines.vllm_plugin import GLOO_BACKEND

    transfer = engine_spec(load_config(None, ["model.lora.enabled=false", "sync.strategy=vllm_transfer"]), "/m")
    assert transfer.weight_transfer and not engine_spec(load_config(None, ["model.lora.enabled=false"]), "/m").weight_transfer
    assert engine_kwargs(transfer, on_cpu=False)[0]["weight_transfer_config"] == {"backend": "nccl"}
    assert engine_kwargs(transfer, on_cpu=True)[0]["weight_transfer_config"] == {"backend": GLOO_BACKEND}
    assert "weight_transfer_config" not in engine_kwargs(spec(), on_cpu=False)[0]
    # vLLM runs its general plugins in every process it starts: the install registers grpo_ray's
    plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert plugins.get("grpo_ray") == "grpo_ray.rollout.engines.vllm_plugin:register"


def test_a_run_config_becomes_one_engine_spec() -> None:
    cfg = load_config(None, ["rollout.tensor_parallel_size=2", "rollout.gpu_memory_utilization=0.6", "model.dtype=bfloat16",
                             "model.load_in_4bit=true", "learner.zero_stage=2", "rollout.max_completion_tokens=100",
                             "data.max_prompt_tokens=60"])
    s = engine_spec(cfg, "/m")
    assert (s.engine, s.tensor_parallel_size, s.gpu_memory_utilization, s.dtype) == ("vllm", 2, 0.6, "bfloat16")
    assert s.quantization == "nf4" and s.max_model_len == 160 and s.lora["r"] == cfg.model.lora.r
    full = engine_spec(load_config(None, ["model.lora.enabled=false"]), "/m")
    assert full.lora is None and full.quantization is None


def test_the_server_takes_the_same_platform_settings_as_flags() -> None:
    o = ServeOptions(model="/m", model_name="m", tensor_parallel_size=2, gpu_memory_utilization=0.8)
    gpu = vllm_server_args(o, on_cpu=False)
    assert gpu[gpu.index("--distributed-executor-backend") + 1] == "mp"
    assert gpu[gpu.index("--gpu-memory-utilization") + 1] == "0.8" and "--enforce-eager" not in gpu
    cpu = vllm_server_args(ServeOptions(model="/m", model_name="m"), on_cpu=True)
    kwargs, _ = platform_settings(on_cpu=True, dtype="auto", tensor_parallel_size=1, gpu_memory_utilization=0.8,
                                  cpu_kvcache_gb=1.0)
    assert all(flag in cpu for flag in cli_flags(kwargs))
    assert "--no-enable-chunked-prefill" in cpu and "--enforce-eager" in cpu
    # the server's async engine keeps its engine-core process; only the KV-cache size is set
    assert vllm_server_env(ServeOptions(model="/m", model_name="m"), on_cpu=True) == {"VLLM_CPU_KVCACHE_SPACE": "1"}


def test_vllms_own_parser_takes_the_server_flags() -> None:
    pytest.importorskip("vllm")
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(
        vllm_server_args(ServeOptions(model="/m", model_name="m", tensor_parallel_size=4), on_cpu=False))
    assert args.distributed_executor_backend == "mp" and args.tensor_parallel_size == 4
    cpu = make_arg_parser(FlexibleArgumentParser()).parse_args(vllm_server_args(ServeOptions(model="/m", model_name="m"), on_cpu=True))
    assert cpu.enforce_eager is True and cpu.enable_chunked_prefill is False and cpu.dtype == "float32"


def test_engines_are_registered_by_import_path() -> None:
    assert ENGINES.names() == ["hf", "vllm"]
    with pytest.raises(KeyError, match="known: hf, vllm"):
        ENGINES.get("sglang")
