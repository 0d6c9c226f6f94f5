"""Step time of synchronous training against async training with staleness K = 1 and 2, side by side.

    .venv/bin/python bench/async_lag.py                  # 3 rounds x (K=0, 1, 2) x 6 steps
    .venv/bin/python bench/async_lag.py --rounds 2 --steps 8

The embedded default (examples/tiny_cpu.yaml) on one vLLM rollout actor shared by every run; each run
starts its own learner. The runs alternate K=0, 1, 2, 0, 1, 2, ... so a machine whose speed drifts
moves every K alike, and each K's step time is the median over its rounds without each run's first
step. Rollout and learner get one CPU each in every run (the async runs need that, see docs/async_and_fault_tolerance.md), so
the comparison is the same split of the machine. It also prints the longer of the synchronous run's
generate and update phases, the best any overlap can reach.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path


def main() -> int:
    import ray

    from grpo_ray.cluster import Workers
    from grpo_ray.config import load_config
    from grpo_ray.run.trainer import GRPOTrainer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="grpo_ray_async_"))
    common = ["trainer.save_every=0", "trainer.log_completions_every=0", "trainer.sinks=[jsonl]", "eval.enabled=false",
              f"trainer.steps={args.steps}", "rollout.num_cpus_per_worker=1", "learner.num_cpus_per_learner=1"]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    workers = Workers.start(load_config("examples/tiny_cpu.yaml", common + [f"trainer.output_dir={root / 'unused'}"]),
                            learners=False)
    steps: dict[int, list[float]] = {0: [], 1: [], 2: []}
    phases: dict[str, list[float]] = {"generate": [], "update": []}
    lags: dict[int, set] = {0: set(), 1: set(), 2: set()}
    try:
        for r in range(args.rounds):
            for k in (0, 1, 2):
                mode = ["trainer.async_rollout=false"] if k == 0 else ["trainer.async_rollout=true", f"trainer.max_policy_lag={k}"]
                cfg = load_config("examples/tiny_cpu.yaml", common + mode + [f"trainer.output_dir={root / f'k{k}-{r}'}"])
                trainer = GRPOTrainer(cfg).setup(workers=workers)
                history = trainer.train()[1:]  # without the first step (no generation ahead yet)
                trainer.workers.stop_learners()
                steps[k] += [h["timing/step"] for h in history]
                lags[k] |= {h["policy_version_lag"] for h in history}
                if k == 0:
                    phases["generate"] += [h["timing/generate"] for h in history]
                    phases["update"] += [h["timing/update"] for h in history]
                print(f"round {r} K={k}: median step {statistics.median(h['timing/step'] for h in history):.2f} s",
                      file=sys.stderr, flush=True)
    finally:
        workers.shutdown()
        ray.shutdown()
    gen, upd = statistics.median(phases["generate"]), statistics.median(phases["update"])
    bound = max(gen, upd)
    sync = statistics.median(steps[0])
    print(f"\nStep time, built-in model, B=8 x G=8, 48 tokens, rollout and learner 1 CPU each, {args.rounds} rounds\n")
    print("| K | median step s | vs synchronous | vs max(generate, update) | lags seen |")
    print("|---:|---:|---:|---:|---|")
    for k in (0, 1, 2):
        med = statistics.median(steps[k])
        print(f"| {k} | {med:.2f} | {med / sync:.3f} | {med / bound:.3f} | {sorted(lags[k])} |")
    print(f"\nsynchronous phases: generate {gen:.2f} s, update {upd:.2f} s; an overlapped step cannot beat {bound:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
