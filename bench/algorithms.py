"""What each algorithm switch does to the built-in task's curve: one run per switch of the embedded
default (examples/tiny_cpu.yaml: the built-in model, LoRA r64, 8 prompts x 8 completions, 48 tokens),
each evaluated greedily on the same held-out problems, printed as one table.

    .venv/bin/python bench/algorithms.py                 # every switch, 20 steps each
    .venv/bin/python bench/algorithms.py --steps 10 --only baseline rloo

The runs share one Ray cluster and one vLLM rollout actor (each starts its own learner), so they differ
only in the switch. Held-out: 200 problems, whose standard error is about 3 points.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

SWITCHES = {
    "baseline": [],  # the embedded default: grpo estimator, scale none, clip, dapo aggregation
    "rloo": ["algo.advantage_estimator=rloo"],
    "reinforce_pp_baseline": ["algo.advantage_estimator=reinforce_pp_baseline"],
    "cispo": ["algo.policy_objective=cispo"],
    "sapo": ["algo.policy_objective=sapo"],
    "delta=1.5": ["algo.delta=1.5"],
    "dynamic_sampling": ["algo.dynamic_sampling=true", "algo.dynamic_sampling_max_rounds=3"],
    "soft_overlong": ["reward.functions=[{name: correctness}, {name: integer}, {name: strict_format}, {name: soft_format}, "
                      "{name: xml_count}, {name: soft_overlong, kwargs: {max_completion_len: 48, soft_punish_cache: 16}}]"],
    "group std": ["algo.scale_rewards=group"],
    # With one update per batch the ratio is 1 at the update and the objectives give the same
    # gradient; they differ once the policy moves away from the sampler: two updates per batch.
    "clip, 2 updates": ["algo.num_iterations=2"],
    "cispo, 2 updates": ["algo.policy_objective=cispo", "algo.num_iterations=2"],
    "sapo, 2 updates": ["algo.policy_objective=sapo", "algo.num_iterations=2"],
    "delta=1.5, 2 updates": ["algo.delta=1.5", "algo.num_iterations=2"],
}


def main() -> int:
    import ray

    from grpo_ray.cluster import Workers
    from grpo_ray.config import load_config
    from grpo_ray.run.trainer import GRPOTrainer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--every", type=int, default=5, help="evaluate every N steps")
    p.add_argument("--only", nargs="*", choices=list(SWITCHES), help="a subset of the switches")
    args = p.parse_args()
    base = ["trainer.save_every=0", "trainer.log_completions_every=0", "trainer.sinks=[jsonl]",
            f"trainer.steps={args.steps}", f"eval.every={args.every}"]
    root = Path(tempfile.mkdtemp(prefix="grpo_ray_algorithms_"))
    # logical CPUs: the config gives rollout and learner two each (they alternate) and the reward actor half
    ray.init(num_cpus=5, include_dashboard=False, log_to_driver=False)
    workers = Workers.start(load_config("examples/tiny_cpu.yaml", base + [f"trainer.output_dir={root / 'unused'}"]),
                            learners=False)
    rows = []
    try:
        for name in args.only or SWITCHES:
            cfg = load_config("examples/tiny_cpu.yaml", base + SWITCHES[name] + [f"trainer.output_dir={root / name}"])
            trainer = GRPOTrainer(cfg).setup(workers=workers)
            start = time.perf_counter()
            history = trainer.train()
            wall = time.perf_counter() - start
            trainer.workers.stop_learners()
            curve = [(h["step"], h["eval/hard_correctness"]) for h in history if "eval/hard_correctness" in h]
            steps = [h for h in history if "timing/step" in h]
            rows.append((name, curve, sum(h["timing/step"] for h in steps) / len(steps), wall))
            print(f"{name}: " + ", ".join(f"{s}: {v:.3f}" for s, v in curve), file=sys.stderr, flush=True)
    finally:
        workers.shutdown()
        ray.shutdown()
    steps_shown = [s for s, _ in rows[0][1]]
    print(f"\nHeld-out hard correctness (200 problems, greedy) by step, built-in model, {args.steps} steps each\n")
    print("| switch | " + " | ".join(f"step {s}" for s in steps_shown) + " | change | s/step |")
    print("|---|" + "---:|" * (len(steps_shown) + 2))
    for name, curve, per_step, _ in rows:
        values = dict(curve)
        change = curve[-1][1] - curve[0][1]
        print(f"| {name} | " + " | ".join(f"{values.get(s, float('nan')):.3f}" for s in steps_shown)
              + f" | {change:+.3f} | {per_step:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
