"""grpo_ray (synchronous and one-step-off async) against TRL's GRPOTrainer, side by side in one run.

The same embedded task for each: the built-in model and arithmetic prompts, B=8 prompts x G=8
completions of up to 48 tokens at T=0.7, LoRA r64/alpha 64, lr 5e-4 constant, no KL, DAPO loss,
centred advantages, the same reward functions, the same number of steps. Prints

  P1  grpo_ray step time / TRL step time                      (target <= 0.5)
  P2  rollout tokens/s through the rollout actor / bare vLLM   (target >= 0.9)
  P3  adapter sync time / step time                            (target <= 2%), and the same for
      full fine-tuning, whose every weight is synced each step
  P4  async step time / max(generate, update) of sync          (target <= 1.15)

and the mean reward and correctness over the last steps of each run, so speed is not bought with
learning. A benchmark, not a test: the numbers depend on the machine.

    .venv/bin/python bench/compare_trl.py [--steps 12] [--engine vllm|hf]
    .venv/bin/python bench/compare_trl.py --task smollm2-gsm8k --steps 4 --runs sync full
    .venv/bin/python bench/compare_trl.py --task smollm2-tools --steps 5 --runs sync

``--task smollm2-gsm8k`` is the same comparison on a real pretrained model: SmolLM2-135M-Instruct on
GSM8K with examples/smollm2_gsm8k_cpu.yaml's prompt recipe (a demonstration turn and the
"<reasoning>\n" assistant prefix, rendered into TRL's prompts as text), B=4 x G=4, 128 tokens, LoRA r16.
Both sides take the task from the same config: data, G, B, lengths, temperature, LoRA, lr, rewards
and their weights.

``--task smollm2-tools`` is the calculator task (examples/smollm2_arithmetic_tools_cpu.yaml, B=4 x G=4,
128 tokens per episode, tool tokens included): TRL's ``GRPOTrainer(tools=[calculator])`` with the same
function, the same four demonstrations and at most ``max_tool_calls`` calls. TRL cannot prefill the
assistant turn when tools are on, so its episodes start without the call's opening that grpo_ray's
recipe writes for the model; the tool-call rate of both sides is printed next to their rewards.

Drift-proofing on a shared machine: grpo_ray's synchronous steps alternate with TRL's, and P2's
actor and bare-engine batches alternate (the bare engine is the rollout actor's own engine, called
inside its process without Ray). The async run is separate: its roles need the cores split.

On a machine with CUDA every role runs on the GPU (one GPU: rollout and learner take half each; two or
more: one each) and TRL trains there too. ``--engine hf`` uses the transformers rollout engine, and P2
then compares the rollout actor with that engine's own ``generate`` inside the actor.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = ["eval.enabled=false", "trainer.sinks=[jsonl]", "trainer.save_every=0", "trainer.log_completions_every=0",
          "learner.lr_scheduler=constant"]


def median(history, key, skip=1):
    return statistics.median(h[key] for h in history[skip:] if key in h)


def tail_mean(values, k=4):
    values = list(values)[-k:]
    return sum(values) / len(values)


def placement_overrides() -> list[str]:
    """Every role on the GPU when there is one: half a GPU each when there is only one."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus == 0:
        return []
    share = 0.5 if gpus == 1 else 1
    return [f"rollout.num_gpus_per_worker={share}", f"learner.num_gpus_per_learner={share}",
            "rollout.gpu_memory_utilization=0.3"]


def async_cores() -> list[str]:
    """On CPU, generation and update run at once in async mode: the rollout worker gets one core and the
    learner the rest (sharing them slows the updates several times), as docs/async_and_fault_tolerance.md says."""
    import os

    import torch

    if torch.cuda.is_available():
        return []
    return ["rollout.num_cpus_per_worker=1", f"learner.num_cpus_per_learner={max(1, (os.cpu_count() or 2) - 1)}"]


# Each task: its config and what the comparison changes in it (the same for both sides).
TASKS = {
    "builtin": ("tiny_cpu.yaml", ["learner.micro_batch_size=64"]),
    "smollm2-gsm8k": ("smollm2_gsm8k_cpu.yaml", ["rollout.group_size=4", "trainer.prompts_per_step=4",
                                                "learner.micro_batch_size=16"]),
    "smollm2-tools": ("smollm2_arithmetic_tools_cpu.yaml", ["rollout.group_size=4", "trainer.prompts_per_step=4",
                                                           "learner.micro_batch_size=8"]),
}


def task_config(task: str, steps: int, out: Path, *overrides: str):
    from grpo_ray.config import load_config

    name, changes = TASKS[task]
    return load_config(REPO / "examples" / name, [f"trainer.steps={steps}", f"trainer.output_dir={out}", *COMMON,
                                                  *changes, *placement_overrides(), *overrides])


def grpo_ray_trainer(task: str, steps: int, out: Path, *overrides: str):
    from grpo_ray.run.trainer import GRPOTrainer

    return GRPOTrainer(task_config(task, steps, out, *overrides)).setup()


def run_grpo_ray(task: str, steps: int, out: Path, *overrides: str):
    trainer = grpo_ray_trainer(task, steps, out, *overrides)
    history = trainer.train()
    trainer.shutdown()
    return history


def rollout_vs_bare(trainer, rounds: int = 6) -> tuple[float, float]:
    """tokens/s of the same prompt batches (same sampling settings and seeds) generated through the
    rollout actor, timed in this process, and by the engine's library called inside that actor's own
    process (vLLM's ``LLM.generate``; for ``hf``, the engine's ``generate``), timed there: the same
    weights and threads, so the ratio is what grpo_ray's actor path costs. The two alternate (ABBA), so
    a machine that speeds up or slows down during the run moves both alike."""
    import ray

    rows = [trainer.rollout.draw() for _ in range(rounds)]
    work = [([r["prompt"] for r in batch], trainer.rollout.sampling(1000 + i)) for i, batch in enumerate(rows)]
    worker = trainer.workers.rollouts[0]

    def through_actor(prompts, sampling):
        start = time.perf_counter()
        batch = trainer.rollout.generate(prompts, sampling, trainer.learners.weights)
        return sum(len(c) for c in batch.completion_ids), time.perf_counter() - start

    def bare(prompts, sampling):
        return ray.get(worker.__ray_call__.remote(_bare_generate, prompts, sampling))

    through_actor(*work[0]), bare(*work[0])  # warm-up
    totals = {through_actor: [0, 0.0], bare: [0, 0.0]}
    for i, item in enumerate(work):
        for run in ((through_actor, bare) if i % 2 == 0 else (bare, through_actor)):
            tokens, seconds = run(*item)
            totals[run][0] += tokens
            totals[run][1] += seconds
    return totals[through_actor][0] / totals[through_actor][1], totals[bare][0] / totals[bare][1]


def _bare_generate(worker, prompts, sampling) -> tuple[int, float]:
    """Runs inside the RolloutWorker actor (``worker`` is the actor instance): (tokens, seconds)."""
    from grpo_ray.wire import GenerationRequest

    engine, request = worker.engine, GenerationRequest(prompts, sampling)
    if not hasattr(engine, "llm"):  # the transformers engine: its own generate, without Ray around it
        start = time.perf_counter()
        batch = engine.generate(request)
        return sum(len(c) for c in batch.completion_ids), time.perf_counter() - start
    # vLLM's LLM.generate with exactly the inputs the engine would give it (per-prompt seeds, adapter)
    _, args = engine.vllm_generate_args(request)
    start = time.perf_counter()
    outputs = engine.llm.generate(**args, use_tqdm=False)
    return sum(len(c.token_ids) for o in outputs for c in o.outputs), time.perf_counter() - start


def run_trl(cfg, steps: int, out: Path, between_steps=None):
    """TRL's GRPOTrainer on ``cfg``'s task; ``between_steps()`` runs after each of its timed steps."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from grpo_ray.data.from_config import load_split
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rewards import resolve_reward

    path = resolve_model_path(cfg.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = load_split(cfg.data, seed=cfg.trainer.seed)
    tools = trl_tools(cfg, tokenizer)
    prefix = cfg.data.assistant_prefix
    if tools:
        # TRL opens the assistant turn itself when tools are on (no prefill): the prompt is the chat up to
        # the question, and the model writes the call's opening on its own
        def prompt(messages):
            return messages[:-1] if messages[-1]["role"] == "assistant" else messages
        prefix = ""
    elif prefix:
        # TRL opens a new assistant turn after a chat prompt; an assistant prefix is the open turn itself,
        # so those prompts go to TRL as the text grpo_ray's engine renders
        def prompt(messages):
            return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    else:
        def prompt(messages):
            return messages
    data = Dataset.from_list([{"prompt": prompt(r["prompt"]), "answer": r["answer"]} for r in rows])

    def with_prefix(fn):
        """grpo_ray's rewards see the assistant prefix as part of the completion; TRL's completion
        starts after it."""
        def reward(prompts, completions, **kw):
            return fn(prompts, [prefix + c for c in completions], **kw)
        reward.__name__ = fn.__name__
        return reward

    rewards = [resolve_reward(f.name) for f in cfg.reward.functions]
    rewards = [with_prefix(fn) for fn in rewards] if prefix else rewards
    r, lora = cfg.rollout, cfg.model.lora
    args = GRPOConfig(
        output_dir=str(out), use_cpu=not torch.cuda.is_available(), bf16=False, use_vllm=False, max_steps=steps,
        per_device_train_batch_size=cfg.trainer.prompts_per_step * r.group_size, num_generations=r.group_size,
        max_completion_length=r.max_completion_tokens, temperature=r.temperature, learning_rate=cfg.learner.lr,
        lr_scheduler_type="constant", beta=cfg.algo.beta, loss_type=cfg.algo.loss_type, scale_rewards=cfg.algo.scale_rewards,
        reward_weights=[f.weight for f in cfg.reward.functions], logging_steps=1, report_to="none",
        save_strategy="no", seed=cfg.trainer.seed,
        **({"max_tool_calling_iterations": r.max_tool_calls} if tools else {}),
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), reward_funcs=rewards, args=args,
        train_dataset=data, processing_class=tokenizer, tools=tools or None,
        peft_config=LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules),
    )
    step_times = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)
            print(f"TRL step {len(step_times)}: {step_times[-1]:.1f} s", flush=True)  # a cut run keeps its numbers
            if between_steps is not None:
                between_steps()

    trainer.add_callback(Clock())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return step_times, logs


def trl_tools(cfg, tokenizer) -> list:
    """The run's tools as the plain functions TRL takes. TRL needs a chat template that renders tool
    calls and a response parser it knows: a template without tools (SmolLM2's) gets TRL's own Qwen2.5
    one, which uses the same ChatML tokens and Hermes <tool_call> format as grpo_ray's calls."""
    if cfg.rollout.kind != "multi_turn":
        return []
    from trl.chat_template_utils import supports_tool_calling

    from grpo_ray.tools.registry import resolve_tool

    if not supports_tool_calling(tokenizer):
        import trl

        tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    return [resolve_tool(spec).fn for spec in cfg.rollout.tools]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="the rollout engine of every grpo_ray run")
    p.add_argument("--task", choices=sorted(TASKS), default="builtin")
    p.add_argument("--runs", nargs="+", choices=["sync", "async", "full"], default=["sync", "async", "full"],
                   help="grpo_ray runs besides TRL's; sync (and P1-P3) always runs")
    args = p.parse_args()
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="grpo_bench_"))
    engine = f"rollout.engine={args.engine}"

    # grpo_ray's synchronous steps alternate with TRL's (its cluster idles during TRL's step), so a
    # machine whose speed drifts during the run moves both alike
    trainer, sync = grpo_ray_trainer(args.task, args.steps, tmp / "sync", engine), []
    def grpo_ray_step() -> None:
        sync.append(trainer.train_step()[0])
        print(f"grpo_ray step {len(sync)}: {sync[-1]['timing/step']:.1f} s", flush=True)

    trl_times, trl_logs = run_trl(trainer.cfg, args.steps, tmp / "trl", between_steps=grpo_ray_step)
    # P2 compares single-turn generation; multi-turn throughput has its own benchmark
    # (bench/multi_turn_throughput.py)
    single_turn = trainer.cfg.rollout.kind != "multi_turn"
    actor_tps, bare_tps = rollout_vs_bare(trainer) if single_turn else (None, None)
    cfg = trainer.cfg
    trainer.shutdown()
    ray.shutdown()  # each further run starts its own cluster
    runs = {"grpo_ray sync": sync}
    if "async" in args.runs:
        runs["grpo_ray async"] = run_grpo_ray(args.task, args.steps, tmp / "async", engine, "trainer.async_rollout=true",
                                              *async_cores())
        ray.shutdown()
    if "full" in args.runs:
        # full fine-tuning: every weight trains and goes to the rollout engine each step ("full" sync)
        runs["grpo_ray sync, full fine-tuning"] = run_grpo_ray(args.task, args.steps, tmp / "full", engine,
                                                               "model.lora.enabled=false", "learner.lr=5e-5")

    step, gen, upd, sync_s = (median(sync, k) for k in ("timing/step", "timing/generate", "timing/update", "timing/sync"))
    trl_step = statistics.median(trl_times[1:])
    correct = f"rewards/{cfg.reward.functions[0].name}/mean"
    print(f"\n{machine()}; rollout engine {args.engine}; task {args.task} ({cfg.model.name_or_path}, {cfg.data.source})")
    print(f"steps {args.steps}, B={cfg.trainer.prompts_per_step} x G={cfg.rollout.group_size}, "
          f"{cfg.rollout.max_completion_tokens} tokens, medians without the first step\n")
    print("| run | step s | generate s | update s | sync s | reward (last 4) | correctness (last 4) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, h in runs.items():
        print(f"| {name} | {median(h, 'timing/step'):.2f} | {median(h, 'timing/generate'):.2f} | "
              f"{median(h, 'timing/update'):.2f} | {median(h, 'timing/sync'):.3f} | "
              f"{tail_mean(x['reward'] for x in h):.3f} | {tail_mean(x[correct] for x in h):.3f} |")
    # TRL names each reward by its function's __name__
    trl_correct = next(k for k in trl_logs[-1] if k.startswith("rewards/") and k.endswith("/mean") and "correct" in k)
    print(f"| TRL GRPOTrainer | {trl_step:.2f} | | | | {tail_mean(x['reward'] for x in trl_logs):.3f} | "
          f"{tail_mean(x[trl_correct] for x in trl_logs):.3f} |")
    if "tools/calls_per_episode" in sync[-1]:
        print(f"\ntool calls per episode (last 4): grpo_ray {tail_mean(x['tools/calls_per_episode'] for x in sync):.2f}, "
              f"TRL {tail_mean(x.get('tools/call_frequency', 0.0) for x in trl_logs):.2f}")
    print()
    print(f"P1 step time grpo_ray / TRL          = {step / trl_step:.3f}   (target <= 0.5)")
    bare = "bare vLLM" if args.engine == "vllm" else "bare HF   "
    if single_turn:
        print(f"P2 rollout tok/s actor / {bare}   = {actor_tps:.0f} / {bare_tps:.0f} = {actor_tps / bare_tps:.3f}   "
              "(target >= 0.9)")
    print(f"P3 sync / step                       = {sync_s / step:.3%}   (target <= 2%)")
    if "full" in args.runs:
        full = runs["grpo_ray sync, full fine-tuning"]
        full_sync, full_step = median(full, "timing/sync"), median(full, "timing/step")
        print(f"P3 full-weight sync / step           = {full_sync / full_step:.3%}   ({full_sync * 1000:.0f} ms of "
              f"{full_step:.2f} s; LoRA's adapter above)")
    if "async" in args.runs:
        astep = median(runs["grpo_ray async"], "timing/step")
        print(f"P4 async step / max(gen, update)     = {astep:.2f} / {max(gen, upd):.2f} = {astep / max(gen, upd):.3f}   "
              "(target <= 1.15)")


def machine() -> str:
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"CPU only, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
