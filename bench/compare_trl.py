"""grpo_ray (synchronous and one-step-off async) against TRL's GRPOTrainer, side by side in one run.

The same embedded task for each: the built-in model and arithmetic prompts, B=8 prompts x G=8
completions of up to 48 tokens at T=0.7, LoRA r64/alpha 64, lr 5e-4 constant, no KL, DAPO loss,
centred advantages, the same reward functions, the same number of steps. Prints

  P1  grpo_ray step time / TRL step time                      (target <= 0.5)
  P2  rollout tokens/s through the rollout actor / bare vLLM   (target >= 0.9)
  P3  adapter sync time / step time                            (target <= 2%)
  P4  async step time / max(generate, update) of sync          (target <= 1.15)

and the mean reward and correctness over the last steps of each run, so speed is not bought with
learning. A benchmark, not a test: the numbers depend on the machine.

    .venv/bin/python bench/compare_trl.py [--steps 12] [--engine vllm|hf]

On a machine with CUDA every role runs on the GPU (one GPU: rollout and learner take half each; two or
more: one each) and TRL trains there too. ``--engine hf`` uses the transformers rollout engine, and P2
then compares the rollout actor with the same engine called in this process.
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
    learner the rest (sharing them measured 4x slower updates on 2 cores), as the README says."""
    import os

    import torch

    if torch.cuda.is_available():
        return []
    return ["rollout.num_cpus_per_worker=1", f"learner.num_cpus_per_learner={max(1, (os.cpu_count() or 2) - 1)}"]


def run_grpo_ray(steps: int, out: Path, *overrides: str, keep: bool = False):
    from grpo_ray.config import load_config
    from grpo_ray.driver import GRPOTrainer

    cfg = load_config(REPO / "examples" / "tiny_cpu.yaml",
                      [f"trainer.steps={steps}", f"trainer.output_dir={out}", *COMMON, *placement_overrides(), *overrides])
    trainer = GRPOTrainer(cfg).setup()
    history = trainer.train()
    if not keep:
        trainer.shutdown()
    return history, trainer


def rollout_through_actor(trainer, batches: int = 4):
    """tokens/s generating prompt batches through the rollout actor; returns them, the batches, the
    config and the adapter, for the same generation (same sampling settings and seeds) with the bare
    engine once the cluster is gone."""
    import ray

    rows = [trainer.sample_prompts() for _ in range(batches)]
    steps = [1000 + i for i in range(batches)]
    start, tokens = time.perf_counter(), 0
    for r, step in zip(rows, steps):
        tokens += sum(len(c) for c in trainer.generate(r, step=step).completion_ids)
    actor = tokens / (time.perf_counter() - start)
    samplings = [trainer.sampling(step) for step in steps]  # what the actor sampled with
    payload = ray.get(trainer.workers.learners[0].adapter_payload.remote(trainer.version))
    trainer.shutdown()
    ray.shutdown()
    return actor, list(zip(rows, samplings)), trainer.cfg, payload


def bare_engine(cfg, batches, payload) -> float:
    """The engine's library called in this process (vLLM's ``LLM``; for ``hf``, the same transformers
    engine), with the actor's sampling settings. Run last: an in-process vLLM lowers this process's
    torch threads to one, which would slow whatever ran after it."""
    if cfg.rollout.engine == "hf":
        return bare_hf(cfg, batches, payload)
    return bare_vllm(cfg, batches)


def bare_hf(cfg, batches, payload) -> float:
    from grpo_ray.learner.model import lora_config
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rollout.hf_engine import HFEngine
    from grpo_ray.rollout.types import GenerationRequest

    engine = HFEngine(resolve_model_path(cfg.model.name_or_path), dtype=cfg.model.dtype, lora_config=lora_config(cfg.model))
    engine.load_adapter(payload)  # the actor generated under the trained adapter too
    requests = [GenerationRequest([x["prompt"] for x in rows], sampling) for rows, sampling in batches]
    engine.generate(requests[0])  # warm-up, as the actor was warm
    start, tokens = time.perf_counter(), 0
    for request in requests:
        tokens += sum(len(c) for c in engine.generate(request).completion_ids)
    return tokens / (time.perf_counter() - start)


def bare_vllm(cfg, batches) -> float:
    import os

    import torch
    from vllm import LLM, SamplingParams

    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rollout.prompting import encode_prompts, per_prompt_seeds

    # the settings the rollout actor's engine uses (grpo_ray/rollout/vllm_engine.py)
    on_cpu = not torch.cuda.is_available()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(cfg.rollout.cpu_kvcache_gb)))
    if on_cpu:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process
    llm = LLM(model=resolve_model_path(cfg.model.name_or_path), dtype="float32", enforce_eager=on_cpu,
              gpu_memory_utilization=cfg.rollout.gpu_memory_utilization, enable_chunked_prefill=not on_cpu,
              max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_completion_tokens, seed=0,
              logprobs_mode="processed_logprobs",
              **(dict(distributed_executor_backend="uni") if on_cpu else {}))
    tok = llm.get_tokenizer()
    def params(s, count: int) -> list:  # one seed per prompt, as the actor samples (reproducible shards)
        return [SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=s.max_tokens,
                               logprobs=0, seed=seed) for seed in per_prompt_seeds(s.seed, count)]

    work = [([{"prompt_token_ids": ids} for ids in encode_prompts(tok, [x["prompt"] for x in rows])],
             params(sampling, len(rows))) for rows, sampling in batches]
    llm.generate(*work[0], use_tqdm=False)  # warm-up, as the actor was warm
    start, tokens = time.perf_counter(), 0
    for prompts, sampling_params in work:
        tokens += sum(len(c.token_ids) for o in llm.generate(prompts, sampling_params, use_tqdm=False) for c in o.outputs)
    bare = tokens / (time.perf_counter() - start)
    del llm
    return bare


def run_trl(steps: int, out: Path):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from grpo_ray.config import DataConfig
    from grpo_ray.data.from_config import load_split
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rewards import resolve_reward

    rows = load_split(DataConfig(source="arithmetic"), seed=0)
    data = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
    path = resolve_model_path("builtin:arithmetic-base")
    tokenizer = AutoTokenizer.from_pretrained(path)
    rewards = [resolve_reward(n) for n in ["correctness", "integer", "strict_format", "soft_format", "xml_count"]]
    args = GRPOConfig(
        output_dir=str(out), use_cpu=not torch.cuda.is_available(), bf16=False, use_vllm=False, max_steps=steps, per_device_train_batch_size=64,
        num_generations=8, max_completion_length=48, temperature=0.7, learning_rate=5e-4, lr_scheduler_type="constant",
        beta=0.0, loss_type="dapo", scale_rewards="none", logging_steps=1, report_to="none", save_strategy="no", seed=0,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=rewards, args=args, train_dataset=data,
        processing_class=tokenizer, peft_config=LoraConfig(r=64, lora_alpha=64, target_modules="all-linear"),
    )
    step_times = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    trainer.add_callback(Clock())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return step_times, logs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="the rollout engine of both grpo_ray runs")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="grpo_bench_"))
    engine = f"rollout.engine={args.engine}"

    sync, trainer = run_grpo_ray(args.steps, tmp / "sync", engine, keep=True)
    actor_tps, batches, cfg, payload = rollout_through_actor(trainer)
    async_, _ = run_grpo_ray(args.steps, tmp / "async", engine, "trainer.async_rollout=true", *async_cores())
    trl_times, trl_logs = run_trl(args.steps, tmp / "trl")
    bare_tps = bare_engine(cfg, batches, payload)

    step, gen, upd, sync_s = (median(sync, k) for k in ("timing/step", "timing/generate", "timing/update", "timing/sync"))
    astep = median(async_, "timing/step")
    trl_step = statistics.median(trl_times[1:])
    print(f"\n{machine()}; rollout engine {args.engine}")
    print(f"steps {args.steps}, B=8 x G=8, 48 tokens, medians without the first step\n")
    print("| run | step s | generate s | update s | sync s | reward (last 4) | correctness (last 4) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, h in (("grpo_ray sync", sync), ("grpo_ray async", async_)):
        print(f"| {name} | {median(h, 'timing/step'):.2f} | {median(h, 'timing/generate'):.2f} | "
              f"{median(h, 'timing/update'):.2f} | {median(h, 'timing/sync'):.3f} | "
              f"{tail_mean(x['reward'] for x in h):.3f} | {tail_mean(x['rewards/correctness/mean'] for x in h):.3f} |")
    # TRL names each reward by its function's __name__
    trl_correct = next(k for k in trl_logs[-1] if k.startswith("rewards/") and k.endswith("/mean") and "correct" in k)
    print(f"| TRL GRPOTrainer | {trl_step:.2f} | | | | {tail_mean(x['reward'] for x in trl_logs):.3f} | "
          f"{tail_mean(x[trl_correct] for x in trl_logs):.3f} |")
    print()
    print(f"P1 step time grpo_ray / TRL          = {step / trl_step:.3f}   (target <= 0.5)")
    bare = "bare vLLM" if args.engine == "vllm" else "bare HF   "
    print(f"P2 rollout tok/s actor / {bare}   = {actor_tps:.0f} / {bare_tps:.0f} = {actor_tps / bare_tps:.3f}   (target >= 0.9)")
    print(f"P3 sync / step                       = {sync_s / step:.3%}   (target <= 2%)")
    print(f"P4 async step / max(gen, update)     = {astep:.2f} / {max(gen, upd):.2f} = {astep / max(gen, upd):.3f}   (target <= 1.15)")


def machine() -> str:
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"CPU only, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
