"""The learner's peak memory and update time at long completions: whole logits against chunked logprobs,
and the learner against a bare PEFT forward plus backward of the same rows (P5).

One real ``PolicyLearner`` (DeepSpeed, world size 1) on SmolLM2-135M-Instruct with its LoRA adapter, run
in a fresh process per measurement so that one's memory cannot hide in another's. Each process warms
up with a short update, resets its peak (``/proc/self/clear_refs``; on CUDA,
``torch.cuda.reset_peak_memory_stats``), then makes one update of ``--rows`` completions of T tokens
each (random ids; the memory and time do not depend on which). The two sides, at each T:

    before   ``learner.logprob_chunk_size=0``: the LM head runs on every position at once, so the
             float32 logits [rows, T, vocabulary] and their gradient exist whole
    after    the default ``logprob_chunk_size`` (1024): logits exist one chunk at a time, forward and
             backward (recomputed per chunk)

Both run with gradient checkpointing, as long completions are trained (without it the decoder's
activations, not the logits, set the peak). The order flips at each T, since this machine's speed
drifts. Printed per T: the peak memory above the process's memory before the update (RSS on CPU,
allocated CUDA memory on a GPU), the update's seconds, and their ratios after/before. On CPU the
children run with glibc's mmap threshold fixed low (``LIVE_TENSORS_ENV``), so that the RSS follows the
tensors the update holds rather than what malloc's heaps keep after freeing them; ``--glibc-heap``
measures with the default instead. Goal at T=4096:
at most half the peak, and no slower. Then P5: the "after" process also times a bare forward plus
backward of the same rows through the same PEFT model (the whole logits, a log-softmax, a mean); the
learner's update should take at most 1/0.9 of that (bare / learner at least 0.9). The two are
alternated ``--p5-rounds`` times in that process (the first update is the measured one), and their
medians compared.

    .venv/bin/python bench/learner_memory.py [--lengths 256 1024 4096] [--rows 2] [--p5-rounds 3] [--glibc-heap]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT_TOKENS = 64
SIDES = {"before": 0, "after": None}  # logprob_chunk_size (None: the config's default)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(model: str, side: str, length: int, rows: int, p5_rounds: int = 1) -> dict:
    """One update at completion length ``length`` in this process (a fresh one per call)."""
    import torch

    from grpo_ray.config import load_config
    from grpo_ray.learner.policy import PolicyLearner
    from grpo_ray.wire import TrainShard

    chunk = SIDES[side]
    overrides = [f"model.name_or_path={model}", "learner.gradient_checkpointing=true", f"learner.micro_batch_size={rows}",
                 "algo.beta=0.0", f"rollout.max_completion_tokens={length}"]
    if chunk is not None:
        overrides.append(f"learner.logprob_chunk_size={chunk}")
    cfg = load_config(None, overrides)
    learner = PolicyLearner(cfg.model, cfg.learner, cfg.algo, total_steps=4, rows_per_step=rows,
                            max_completion_tokens=length, master_port=_free_port())
    gen = torch.Generator().manual_seed(length)
    vocab = learner.tokenizer.vocab_size

    def shard(t: int) -> TrainShard:
        prompts = [torch.randint(3, vocab, (PROMPT_TOKENS,), generator=gen).tolist()] * rows
        completions = [torch.randint(3, vocab, (t,), generator=gen).tolist() for _ in range(rows)]
        advantages = [(-1.0) ** i for i in range(rows)]
        return TrainShard(prompts, completions, advantages, [[1] * t for _ in range(rows)], float(rows * t), rows)

    learner.train_step(shard(32))  # warm-up: allocator, DeepSpeed's first step
    batch = shard(length)
    cuda = learner.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        base = _status_kib("VmRSS") * 1024
    start = time.perf_counter()
    learner.train_step(batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024) - base
    out = {"side": side, "T": length, "peak_bytes": peak, "seconds": seconds, "device": str(learner.device)}
    if side == "after":  # P5: the learner's update and the bare pass, alternated, medians
        updates, bare = [seconds], []
        for _ in range(p5_rounds):
            bare.append(bare_forward_backward(learner.peft_model, batch))
            if len(updates) < p5_rounds:
                start = time.perf_counter()
                learner.train_step(batch)
                if cuda:
                    torch.cuda.synchronize()
                updates.append(time.perf_counter() - start)
        out["p5"] = statistics.median(bare) / statistics.median(updates)
    return out


def bare_forward_backward(model, batch) -> float:
    """Seconds of a plain forward and backward of ``batch``'s rows through ``model`` (same device)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([p + c for p, c in zip(batch.prompt_ids, batch.completion_ids)], device=device)
    width = len(batch.completion_ids[0])
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=width + 1).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, -width:, None]).squeeze(-1)
    (-logprobs.mean()).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


# On CPU, glibc's malloc serves tensors below its mmap threshold (which rises with every large free, up
# to 32 MB) from heaps it keeps after they are freed, so the RSS high-water mark counts memory the update
# no longer holds. A fixed, low threshold makes every large tensor its own mapping, returned when freed:
# the RSS then follows the tensors the update holds, as CUDA's max_memory_allocated does on a GPU.
# (It slows the update, both sides alike; --glibc-heap measures with the default instead.)
LIVE_TENSORS_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def run_child(model: str, side: str, length: int, rows: int, p5_rounds: int, glibc_heap: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    if not glibc_heap:
        env = {**LIVE_TENSORS_ENV, **env}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps([model, side, length, rows, p5_rounds])],
                          capture_output=True, text=True, env=env, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"{side} at T={length} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--rows", type=int, default=2, help="completions in the update (one micro-batch)")
    ap.add_argument("--p5-rounds", type=int, default=3,
                    help="P5: the learner's update and the bare pass this many times each, alternated (medians)")
    ap.add_argument("--glibc-heap", action="store_true",
                    help="measure with glibc's default malloc settings (its heaps keep freed memory in the RSS)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))), flush=True)
        return

    results = {}
    for i, length in enumerate(args.lengths):
        for side in (("before", "after") if i % 2 == 0 else ("after", "before")):
            r = run_child(args.model, side, length, args.rows, args.p5_rounds, args.glibc_heap)
            results[(side, length)] = r
            print(f"  {side:>6} T={length:>5}: peak {r['peak_bytes'] / 2**20:8.0f} MiB, update {r['seconds']:7.2f} s",
                  flush=True)
    device = results[("after", args.lengths[0])]["device"]
    heap = "" if device != "cpu" else (", glibc's default heap" if args.glibc_heap else
                                        ", MALLOC_MMAP_THRESHOLD_=65536 (RSS follows the live tensors)")
    print(f"\n{args.model}, LoRA, {args.rows} rows of {PROMPT_TOKENS} prompt + T completion tokens, gradient "
          f"checkpointing, on {device}{heap}")
    print("| T | peak before (MiB) | peak after (MiB) | after/before | update before (s) | update after (s) | "
          "after/before | P5: bare / learner |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        b, a = results[("before", length)], results[("after", length)]
        print(f"| {length} | {b['peak_bytes'] / 2**20:.0f} | {a['peak_bytes'] / 2**20:.0f} | "
              f"{a['peak_bytes'] / b['peak_bytes']:.2f} | {b['seconds']:.2f} | {a['seconds']:.2f} | "
              f"{a['seconds'] / b['seconds']:.2f} | {a['p5']:.2f} |")


if __name__ == "__main__":
    main()
