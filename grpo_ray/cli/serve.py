"""``grpo-ray serve``: the base model and its adapters as an OpenAI-compatible endpoint on Ray Serve.

    grpo-ray serve --model builtin:arithmetic-base --adapter builtin:arithmetic-tuned
    grpo-ray serve --model meta-llama/Llama-3.1-8B-Instruct --adapter best=outputs/sweeps/lr_beta_group \\
        --adapter last=outputs/gsm8k_llama3_8b --num-gpus 1 --replicas 2
    grpo-ray serve --model outputs/merged            # a merged model, no adapter

Everything the command line names is checked before Ray starts. Ctrl-C (or SIGTERM) shuts Serve
and Ray down cleanly.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time

from grpo_ray.errors import UserError

# A model's full context (131,072 tokens for Llama-3.1) would size the KV cache past a 40-48 GB GPU.
SERVE_MAX_MODEL_LEN = 8192


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model and its adapters over HTTP (OpenAI API, Ray Serve + vLLM)")
    p.add_argument("--model", required=True, help="base model: builtin:NAME, a folder (a merged model too) or a hub id")
    p.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                   help="an adapter to serve (repeatable): builtin:NAME, a PEFT folder, a checkpoint, a training "
                        "output dir (latest checkpoint) or a sweep dir (best trial); clients pick it by NAME")
    p.add_argument("--name", help="the base model's name in the API (default: its folder or builtin name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=1, help="Serve replicas, each with its own vLLM engine")
    p.add_argument("--num-gpus", type=float, help="GPUs per replica (default: --tensor-parallel-size when the "
                   "cluster has GPUs, else 0)")
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica")
    p.add_argument("--max-model-len", type=int, help=f"longest prompt + completion (default: the model's context, at "
                   f"most {SERVE_MAX_MODEL_LEN}; the KV cache is sized for it)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="fraction of each GPU vLLM may take")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs one replica's engine is split over")
    p.add_argument("--tag-style", choices=["reasoning", "thinking"], default="reasoning")
    p.add_argument("--no-split-reasoning", action="store_true",
                   help="do not add the 'reasoning' and 'answer' fields next to each choice's content")
    p.add_argument("--no-run-prompt", action="store_true",
                   help="send chat requests as they come; by default a request to a model or adapter whose training "
                        "run is known (its config.yaml) gets the run's system prompt, demonstrations and assistant "
                        "prefix where it has none of its own")
    p.add_argument("--tool-call-parser", default="auto",
                   help="vLLM's parser for the model's tool calls (hermes, llama3_json, ...); auto: llama3_json for "
                        "Llama-3 templates, else hermes")
    p.add_argument("--run-tools", action="store_true",
                   help="answer requests to a model trained with built-in tools (calculator, python) by running them on "
                        "the server, turn after turn, returning the final reply and its 'transcript'; requests that "
                        "pass tools of their own still get tool_calls back")
    p.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    p.set_defaults(func=_cmd_serve)


def _check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise UserError(f"--host {host} --port {port}: cannot listen there ({err.strerror}); pick another --port") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from grpo_ray.serve.options import ServeOptions

    from grpo_ray.cli.eval import check_engine_arguments
    from grpo_ray.rollout.generator import default_max_model_len
    from grpo_ray.models.paths import resolve_model_path

    if args.replicas < 1:
        raise UserError(f"--replicas {args.replicas}: must be at least 1")
    check_engine_arguments(args)
    try:
        options = ServeOptions.from_dict({
            "model": args.model, "model_name": args.name, "adapters": args.adapter,
            "max_model_len": args.max_model_len or default_max_model_len(resolve_model_path(args.model), SERVE_MAX_MODEL_LEN),
            "split_reasoning": not args.no_split_reasoning, "run_prompt": not args.no_run_prompt,
            "tag_style": args.tag_style, "num_gpus": args.num_gpus, "num_cpus": args.num_cpus,
            "gpu_memory_utilization": args.gpu_memory_utilization, "tensor_parallel_size": args.tensor_parallel_size,
            "tool_parser": args.tool_call_parser, "run_tools": args.run_tools,
        })
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    if not args.address:
        _check_port(args.host, args.port)
    return run_serve(options, args)


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop


def run_serve(options, args: argparse.Namespace) -> int:
    import os

    import ray
    from ray import serve

    from grpo_ray.serve.app import APP_NAME, build_application

    # Serve's start-up wait ignores SIGINT: both signals end the command through one path
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    try:
        if args.address:
            ray.init(address=args.address)
        else:
            cpus = max(os.cpu_count() or 1, int(args.replicas * options.num_cpus + 1.999))
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)
        serve.start(http_options={"host": args.host, "port": args.port})
        print(f"starting {args.replicas} replica(s) of {options.model_name} "
              f"with {len(options.adapters)} adapter(s); vLLM takes a minute to load...", file=sys.stderr)
        try:
            serve.run(build_application(options, replicas=args.replicas), name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as err:  # a replica failed to start; its traceback is in the log above
            print(f"grpo-ray: the server did not start: {str(err).splitlines()[0]} (the replica's error is above)",
                  file=sys.stderr)
            return 1
        print_ready(url, options)
        while True:
            time.sleep(3600)
    except (_Stop, KeyboardInterrupt):
        print("\nshutting down...", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        print("stopped", file=sys.stderr)


def print_ready(url: str, options) -> None:
    from grpo_ray.data.formats import get_tag_style

    names = [options.model_name, *(a.name for a in options.adapters)]
    model = names[-1]
    prompted = {p.model for p in options.prompts}
    # the system prompt the model was trained with, so the example shows the reasoning format (the
    # server adds it itself to a model whose training run it knows)
    question = "Iris has 20 apples, gives away 17, then gets 60 more. How many apples does Iris have now?"
    system = [] if model in prompted else [{"role": "system", "content": get_tag_style(options.tag_style).system_prompt}]
    messages = [*system, {"role": "user", "content": question}]
    body = json.dumps({"model": model, "messages": messages, "max_tokens": 96, "temperature": 0})
    print(f"\nserving on {url}/v1  (models: {', '.join(names)})", flush=True)
    if options.prompts:
        print("\nchat requests asked as in training (--no-run-prompt to send them as they come):")
        for p in options.prompts:
            print(f"  {p.describe()}")
    print(f"\n  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n    -d '{body}'")
    print(f"\n  from openai import OpenAI\n  client = OpenAI(base_url='{url}/v1', api_key='unused')\n"
          f"  client.chat.completions.create(model='{model}', messages=[...])")
    print("\nCtrl-C stops the server.", flush=True)
