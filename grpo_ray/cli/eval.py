"""``grpo-ray eval``, ``grpo-ray generate`` and ``grpo-ray merge``: argument handling and terminal output."""

from __future__ import annotations

import argparse
import sys
import textwrap

from grpo_ray.errors import UserError
from grpo_ray.rollout.generator import DEFAULT_MAX_MODEL_LEN
from grpo_ray.utils.text import clip_line


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model (and adapter) on a held-out set: a table of reward means",
                       description="Greedy completions for a held-out split, scored as hard/soft correctness, "
                       "integer, soft/strict format (PubMedQA: yes/no/maybe accuracy), each with its maximum.")
    p.add_argument("--model", required=True, help="base model: builtin:NAME, a local folder or a hub id")
    p.add_argument("--adapter", help="LoRA adapter: builtin:NAME, a PEFT folder, a checkpoint or a training output dir")
    p.add_argument("--compare-base", action="store_true", help="also evaluate the base model, side by side")
    p.add_argument("--dataset", required=True, help="arithmetic, gsm8k, pubmedqa, medical-o1, a file/folder or a hub id")
    p.add_argument("--data-dir", help="local copy of a built-in dataset (e.g. ../shared/data/gsm8k)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--subset", help="dataset subset/config")
    p.add_argument("--limit", type=int, help="evaluate the first N rows only")
    p.add_argument("--question-column", help="question column of a custom table")
    p.add_argument("--answer-column", help="answer column of a custom table")
    add_prompt_arguments(p)
    p.add_argument("--max-tokens", type=int, default=256, help="longest completion (default: 256)")
    add_engine_arguments(p, max_model_len_help="the engine's longest prompt + completion (default: the longest "
                         "prompt plus --max-tokens)")
    p.add_argument("--samples", type=int, default=3, help="sample completions to print (default: 3)")
    p.add_argument("--output", help="results folder (default: eval_results/<dataset>-<split>-<time>)")
    p.set_defaults(func=cmd_eval)


def add_generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="answer a question (or read questions interactively) with a model + adapter")
    p.add_argument("--model", required=True, help="base model: builtin:NAME, a local folder or a hub id")
    p.add_argument("--adapter", help="LoRA adapter: builtin:NAME, a PEFT folder, a checkpoint or a training output dir")
    p.add_argument("question", nargs="?", help="the question; omit it to type questions one per line")
    add_prompt_arguments(p)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0)
    add_engine_arguments(p, max_model_len_help=f"the engine's longest prompt + completion (default: the model's "
                         f"context, at most {DEFAULT_MAX_MODEL_LEN})")
    p.set_defaults(func=cmd_generate)


def add_merge_parser(sub) -> None:
    p = sub.add_parser("merge", help="fold an adapter into its base model: safetensors + tokenizer")
    p.add_argument("--model", required=True, help="base model: builtin:NAME, a local folder or a hub id")
    p.add_argument("--adapter", required=True, help="LoRA adapter: builtin:NAME, a PEFT folder, a checkpoint or an output dir")
    p.add_argument("--out", required=True, help="folder for the merged model")
    p.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_merge)


def add_prompt_arguments(p) -> None:
    """How questions become prompts: by default as the run that made --adapter (or --model) built them."""
    p.add_argument("--system-prompt", help="system prompt (default: the training run's, else the tag style's)")
    p.add_argument("--tag-style", choices=["reasoning", "thinking"], help="default: the training run's, else reasoning")
    p.add_argument("--prompt-from", metavar="RUN", help="a training output dir or checkpoint whose config.yaml says how "
                   "prompts are built (system prompt, demonstrations, assistant prefix); default: the one --adapter "
                   "(or --model) comes from")
    p.add_argument("--no-run-prompt", action="store_true", help="ignore the training run's prompt settings")


def add_engine_arguments(p, *, max_model_len_help: str) -> None:
    from grpo_ray.rollout.generator import DEFAULT_GPU_MEMORY_UTILIZATION
    from grpo_ray.rollout.engines.base import ENGINES

    p.add_argument("--engine", default="vllm", choices=ENGINES.names())
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPUs, float32 on CPU), float32, bfloat16, float16")
    p.add_argument("--max-model-len", type=int, help=max_model_len_help)
    p.add_argument("--gpu-memory-utilization", type=float, default=DEFAULT_GPU_MEMORY_UTILIZATION,
                   help=f"fraction of GPU memory vLLM may take (default: {DEFAULT_GPU_MEMORY_UTILIZATION})")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs one engine is split over (default: 1)")


def check_engine_arguments(args) -> None:
    if args.max_model_len is not None and args.max_model_len < 16:
        raise UserError(f"--max-model-len={args.max_model_len}: give at least 16 tokens")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise UserError(f"--gpu-memory-utilization={args.gpu_memory_utilization}: give a fraction in (0, 1]")
    if args.tensor_parallel_size < 1:
        raise UserError(f"--tensor-parallel-size={args.tensor_parallel_size}: give 1 or more GPUs")


def resolve_run_prompt(args):
    """The RunPrompt to build questions with: flags first, then the training run's, then the defaults."""
    from grpo_ray.models.run_prompt import RunPrompt, run_prompt

    found = None
    if not args.no_run_prompt:
        where = args.prompt_from or getattr(args, "adapter", None) or args.model
        found = run_prompt(where)
        if args.prompt_from and found is None:
            raise UserError(f"--prompt-from {args.prompt_from}: no training run's config.yaml there")
    base = found or RunPrompt()
    return RunPrompt(
        tag_style=args.tag_style or base.tag_style,
        system_prompt=args.system_prompt if args.system_prompt is not None else base.system_prompt,
        demonstrations=base.demonstrations, assistant_prefix=base.assistant_prefix, source=base.source,
        kind=base.kind,
    )


def check_model_and_adapter(model: str, adapter: str | None) -> None:
    """A missing built-in model or adapter folder is reported before torch and the engines are imported."""
    from grpo_ray.models.paths import resolve_adapter_path, resolve_model_path

    try:
        resolve_model_path(model)
        if adapter:
            resolve_adapter_path(adapter)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None


def check_fits(max_tokens: int, context: int) -> None:
    if max_tokens >= context:
        raise UserError(f"--max-tokens={max_tokens} leaves no room for a question in a {context}-token context; "
                        "raise --max-model-len or lower --max-tokens")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit={args.limit}: give a positive number of rows")
    if args.max_tokens < 1:
        raise UserError(f"--max-tokens={args.max_tokens}: give a positive number of tokens")
    check_engine_arguments(args)
    check_model_and_adapter(args.model, args.adapter)
    from grpo_ray.data.paths import DataSourceError, local_path

    try:  # a missing file is named before torch and the engines are imported
        local_path(args.dataset)
    except DataSourceError as err:
        raise UserError(str(err)) from None

    from grpo_ray.evaluation.records import sample_records
    from grpo_ray.evaluation.runner import EvalRequest, run_eval

    prompt = resolve_run_prompt(args)
    if prompt.source:
        tools = f", with its tools {list(prompt.kind.options['tools'])}" if prompt.kind else ""
        print(f"prompts built as in {prompt.source}{tools} (--no-run-prompt to use the defaults)", file=sys.stderr)
    req = EvalRequest(
        model=args.model, dataset=args.dataset, adapter=args.adapter, compare_base=args.compare_base,
        split=args.split, data_dir=args.data_dir, subset=args.subset, limit=args.limit,
        question_column=args.question_column, answer_column=args.answer_column, system_prompt=prompt.system_prompt,
        tag_style=prompt.tag_style, demonstrations=prompt.demonstrations, assistant_prefix=prompt.assistant_prefix,
        kind=prompt.kind, max_tokens=args.max_tokens, engine=args.engine, dtype=args.dtype, output=args.output,
        max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_memory_utilization,
        tensor_parallel_size=args.tensor_parallel_size,
    )
    try:
        report = run_eval(req)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    label = "tuned" if "tuned" in report.results else "base"
    records = sample_records(report.rows, report.texts[label], report.results[label], count=args.samples,
                             tag_style=req.tag_style)
    first_key = report.metrics[0].key
    for i, rec in enumerate(records):
        print(f"\n--- sample {i} ({label})   {first_key.replace('_', ' ')}: {rec[first_key]}")
        print(f"question:  {clip_line(rec['question'], 110)}")
        print(f"answer:    {clip_line(rec['answer'], 110)}")
        print("response:\n" + textwrap.indent(rec["response"].strip(), "    "))
        print(f"extracted: {clip_line(rec['extracted'], 110)}")
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    print(f"\n{req.dataset} / {req.split}: {len(report.rows)} prompts, greedy, max {req.max_tokens} tokens ({seconds})\n")
    print(report.table())
    print(f"\nresults: {report.output_dir}/results.json, results.md, completions-*.jsonl")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    if args.max_tokens < 1:
        raise UserError(f"--max-tokens={args.max_tokens}: give a positive number of tokens")
    if args.temperature < 0:
        raise UserError(f"--temperature={args.temperature}: give 0 (greedy) or more")
    check_engine_arguments(args)
    check_model_and_adapter(args.model, args.adapter)
    from grpo_ray.models.paths import local_context_length, resolve_model_path

    # a local model's context is known from its config.json: a length that cannot fit fails before torch loads
    known = args.max_model_len or local_context_length(resolve_model_path(args.model))
    if known:
        check_fits(args.max_tokens, known if args.max_model_len else min(known, DEFAULT_MAX_MODEL_LEN))

    from grpo_ray.rollout.generator import Generator, default_max_model_len, load_adapter
    from grpo_ray.rewards.parsing import extract_xml_answer
    from grpo_ray.rollout.kinds.base import KindSpec, prompt_encoder
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    try:
        adapter = load_adapter(args.adapter)
        context = args.max_model_len or default_max_model_len(resolve_model_path(args.model))
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    check_fits(args.max_tokens, context)
    run = resolve_run_prompt(args)
    gen = Generator(args.model, max_model_len=context, engine=args.engine, dtype=args.dtype,
                    adapter_config=adapter.peft_config if adapter else None, kind=run.kind,
                    gpu_memory_utilization=args.gpu_memory_utilization, tensor_parallel_size=args.tensor_parallel_size)
    if adapter is not None:
        gen.apply_lora(adapter)
    recipe, tag_style = run.recipe(), run.tag_style
    encode = prompt_encoder(run.kind or KindSpec(), gen.tokenizer)  # the tools' description included
    sampling = SamplingConfig(n=1, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)

    def answer(question: str) -> None:
        prompt = recipe.messages(question)
        ids = encode(prompt)
        if len(ids) + args.max_tokens > context:
            print(f"grpo-ray: the question is {len(ids)} tokens; with --max-tokens={args.max_tokens} it exceeds "
                  f"the {context}-token context", file=sys.stderr)
            return
        batch = gen.generate(GenerationRequest([prompt], sampling, columns=[{}]))
        for message in batch.conversations()[0][:-1]:  # a multi-turn episode's calls and results
            calls = [f"{c['function']['name']}({c['function']['arguments']})" for c in message.get("tool_calls", [])]
            print("[call] " + ", ".join(calls) if calls else f"[{message['role']}] {message.get('content') or ''}")
        text = batch.final_texts()[0]
        print(text.strip())
        print(f"[answer: {extract_xml_answer(text, tag_style)}]", flush=True)

    if args.question:
        answer(args.question)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type a question and press Enter; an empty line or Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            break
        if not line.strip():
            if interactive:
                break
            continue
        answer(line.strip())
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from grpo_ray.models.merge import merge_adapter

    try:
        out = merge_adapter(args.model, args.adapter, args.out, dtype=args.dtype, force=args.force)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    print(f"merged model written to {out} (load it with AutoModelForCausalLM.from_pretrained or vLLM)")
    return 0
