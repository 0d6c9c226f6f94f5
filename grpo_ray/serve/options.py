"""What ``grpo-ray serve`` serves, resolved and checked before Ray starts, and the vLLM server
arguments it becomes. No Ray or vLLM import here."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from grpo_ray.errors import UserError
from grpo_ray.models.paths import BUILTIN_PREFIX, resolve_adapter_path, resolve_model_path

if TYPE_CHECKING:
    from grpo_ray.serve.prompts import ServedPrompt

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


@dataclass(frozen=True)
class Adapter:
    name: str  # what clients put in the request's ``model`` field
    path: str  # a PEFT folder
    rank: int


@dataclass(frozen=True)
class ServeOptions:
    model: str  # a resolved local folder or a hub id
    model_name: str
    adapters: tuple[Adapter, ...] = ()
    max_model_len: Optional[int] = None
    split_reasoning: bool = True
    tag_style: str = "reasoning"
    dtype: str = "auto"
    num_gpus: Optional[float] = None  # per replica; None: tensor_parallel_size when the cluster has GPUs
    num_cpus: float = 1.0
    cpu_kvcache_gb: float = 1.0
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    max_loras: int = 4
    trust_remote_code: bool = False
    extra_vllm_args: tuple[str, ...] = field(default_factory=tuple)
    run_prompt: bool = True  # chat requests get each training run's prompt recipe (serve/prompts.py)
    prompts: tuple["ServedPrompt", ...] = ()  # found from the run of each model and adapter when run_prompt
    tool_parser: str = "auto"  # vLLM's tool-call parser; auto: llama3_json for Llama-3 templates, else hermes
    run_tools: bool = False  # the server runs a tool-trained run's built-in tools itself (serve/tools.py)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ServeOptions":
        """From a Serve config's ``args`` (adapters as ``{name: path}`` or a list of specs)."""
        raw = dict(raw)
        adapters = raw.pop("adapters", ()) or ()
        if isinstance(adapters, dict):
            adapters = [f"{k}={v}" for k, v in adapters.items()]
        if adapters and isinstance(adapters[0], dict):  # already resolved (to_dict output)
            resolved = tuple(Adapter(**a) for a in adapters)
        else:
            resolved = resolve_adapters(list(adapters))
        model = raw.pop("model")
        raw["extra_vllm_args"] = tuple(raw.get("extra_vllm_args", ()))
        name = raw.pop("model_name", None) or default_model_name(model)
        path = resolve_model_path(model)
        raw["prompts"] = _served_prompts(raw.pop("prompts", None), raw.get("run_prompt", True),
                                         {name: path, **{a.name: a.path for a in resolved}})
        gpus, tp = raw.get("num_gpus"), int(raw.get("tensor_parallel_size", 1))
        if gpus is not None and tp > 1 and gpus < tp:
            raise UserError(f"num_gpus={gpus:g} with tensor_parallel_size={tp}: a replica's engine runs on {tp} GPUs, so "
                            f"it needs num_gpus >= {tp} (num_gpus is per replica, not per tensor-parallel rank); "
                            "leave it out to get exactly that")
        if raw.get("tool_parser", "auto") == "auto":
            raw["tool_parser"] = _default_tool_parser(path)
        if raw.get("run_tools"):
            _check_run_tools(raw["prompts"])
        return cls(model=path, model_name=name, adapters=resolved, **raw)

    def served_names(self) -> list[str]:
        return [self.model_name, *(a.name for a in self.adapters)]


def _default_tool_parser(model_path: str) -> str:
    """vLLM's tool-call parser for the model's call format (read from its tokenizer)."""
    from transformers import AutoTokenizer

    from grpo_ray.rollout.tool_calls import default_parser

    try:
        return default_parser(AutoTokenizer.from_pretrained(model_path))
    except (OSError, ValueError):
        return "hermes"


def _check_run_tools(prompts) -> None:
    """--run-tools needs a served model trained with built-in tools, and runs only those."""
    from grpo_ray.tools.registry import BUILTIN_TOOLS

    with_tools = [p for p in prompts if p.tools]
    if not with_tools:
        raise UserError("--run-tools: no served model comes from a training run with rollout.tools; serve a tool-trained "
                        "adapter or leave --run-tools out (clients can still pass tools)")
    for p in with_tools:
        other = [t for t in p.tools if t not in BUILTIN_TOOLS]
        if other:
            raise UserError(f"--run-tools: {p.model}'s run uses tools the server does not run itself ({', '.join(other)}); "
                            f"only built-ins ({', '.join(BUILTIN_TOOLS)}) run on the server")


def _served_prompts(given, run_prompt: bool, models: dict[str, str]) -> tuple["ServedPrompt", ...]:
    """``given`` (to_dict output) as it was, else each model's run's prompt recipe when ``run_prompt``."""
    from grpo_ray.serve.prompts import ServedPrompt, find_served_prompts

    if given is not None:
        return tuple(p if isinstance(p, ServedPrompt) else ServedPrompt.from_dict(p) for p in given)
    return find_served_prompts(models) if run_prompt else ()


def default_model_name(model: str) -> str:
    if model.startswith(BUILTIN_PREFIX):
        return model[len(BUILTIN_PREFIX):]
    path = Path(model)
    return path.name if path.exists() else model


def _adapter_name(spec: str, path: Path) -> str:
    if spec.startswith(BUILTIN_PREFIX):
        return spec[len(BUILTIN_PREFIX):]
    given = Path(spec).expanduser().resolve()
    parts = [p for p in (given.name, given.parent.name) if p and p not in ("adapter", "checkpoints")]
    if re.match(r"^step-\d+$", given.name) and given.parent.name == "checkpoints":
        return f"{given.parent.parent.name}-{given.name}"
    return parts[0] if parts else path.parent.name


def resolve_adapters(specs: list[str]) -> tuple[Adapter, ...]:
    """``[NAME=]PATH`` each, PATH as ``resolve_adapter_path`` takes it; names must be unique."""
    out: list[Adapter] = []
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep:
            name, where = "", spec
        try:
            path = resolve_adapter_path(where)
        except FileNotFoundError as err:
            raise UserError(f"--adapter {spec}: {err}") from None
        name = name or _adapter_name(where, path)
        if not _NAME.match(name):
            raise UserError(f"--adapter {spec}: the name {name!r} must be letters, digits, '.', '_', ':' or '-'")
        if any(a.name == name for a in out):
            raise UserError(f"--adapter {spec}: the name {name!r} is taken; give one as NAME=PATH")
        config = json.loads((path / "adapter_config.json").read_text())
        out.append(Adapter(name, str(path), int(config.get("r", 8))))
    return tuple(out)


def vllm_lora_rank(rank: int) -> int:
    """The engine's max LoRA rank for an adapter of ``rank`` (the rollout engine's rule)."""
    from grpo_ray.rollout.engines.vllm_args import vllm_max_lora_rank

    try:
        return vllm_max_lora_rank(rank)
    except ValueError:
        raise UserError(f"adapter rank {rank}: vLLM serves LoRA ranks up to 512") from None


def vllm_server_env(o: ServeOptions, *, on_cpu: bool) -> dict[str, str]:
    """Environment variables the replica sets before vLLM starts (the rollout engine's platform settings)."""
    _, env = _platform(o, on_cpu)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server's async engine keeps its engine-core process
    return env


def _platform(o: ServeOptions, on_cpu: bool):
    from grpo_ray.rollout.engines.vllm_args import platform_settings

    return platform_settings(on_cpu=on_cpu, dtype=o.dtype, tensor_parallel_size=o.tensor_parallel_size,
                             gpu_memory_utilization=o.gpu_memory_utilization, cpu_kvcache_gb=o.cpu_kvcache_gb)


def vllm_server_args(o: ServeOptions, *, on_cpu: bool) -> list[str]:
    """The ``vllm serve`` command line for these options (parsed by vLLM's own argument parser): the same
    platform settings the rollout engine uses (``grpo_ray.rollout.engines.vllm_args``), as flags."""
    from grpo_ray.rollout.engines.vllm_args import cli_flags

    kwargs, _ = _platform(o, on_cpu)
    args = ["--model", o.model, "--served-model-name", o.model_name, *cli_flags(kwargs), "--disable-uvicorn-access-log"]
    if o.max_model_len:
        args += ["--max-model-len", str(o.max_model_len)]
    if o.trust_remote_code:
        args.append("--trust-remote-code")
    args += ["--enable-auto-tool-choice", "--tool-call-parser", o.tool_parser]  # OpenAI's tools= and tool_calls
    if o.adapters:
        args += ["--enable-lora", "--max-lora-rank", str(vllm_lora_rank(max(a.rank for a in o.adapters))),
                 "--max-loras", str(max(1, min(o.max_loras, len(o.adapters)))),
                 "--lora-modules", *(f"{a.name}={a.path}" for a in o.adapters)]
    return args + list(o.extra_vllm_args)
