"""``grpo-ray train``: run a training job, or a dry run, and present the result on the terminal."""

from __future__ import annotations

import logging
import signal
import sys
import time

from grpo_ray.config import GRPOConfig
from grpo_ray.errors import NonFiniteUpdate, UserError
from grpo_ray.utils.text import clip_line


def _sigterm_as_interrupt(signum, frame):  # so `kill` shuts actors down like Ctrl-C does
    raise KeyboardInterrupt


def run_train(cfg: GRPOConfig, *, dry_run: bool = False) -> int:
    from grpo_ray.data.sources import DataSourceError
    from grpo_ray.run.trainer import GRPOTrainer, LearnerDied

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    trainer = GRPOTrainer(cfg)
    try:
        try:
            trainer.setup(learners=not dry_run)
        except (FileNotFoundError, DataSourceError) as err:
            raise UserError(str(err)) from None
        if dry_run:
            from grpo_ray.run.reporting import dry_run

            print_dry_run(dry_run(trainer.rollout, trainer.rewards))
            return 0
        start = time.perf_counter()
        trainer.train()
        print(f"\ndone: {trainer.step} steps in {time.perf_counter() - start:.0f} s; "
              f"checkpoints in {trainer.checkpoints.root}")
        print_eval_summary(trainer)
        return 0
    except (LearnerDied, NonFiniteUpdate) as err:  # one line: the run stopped, its checkpoints are kept
        print(f"grpo-ray: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {trainer.step}; the last complete checkpoint is kept", file=sys.stderr)
        return 130
    finally:
        trainer.shutdown()


def print_dry_run(result: dict) -> None:
    samples, metrics = result["samples"], result["metrics"]
    reward_keys = [k for k in samples[0] if k.startswith("rewards/")] if samples else []
    print("\nSample completions from the starting policy (no update was made):\n")
    for i, s in enumerate(samples):
        print(f"--- sample {i}   reward {s['reward']:.3f}")
        print(f"question:   {clip_line(s['prompt'], 110)}")
        print(f"answer:     {clip_line(s['answer'], 110)}")
        turns = s["completion"].split("\n[")
        if len(turns) > 1 and turns[0].startswith("[assistant] "):  # a multi-turn transcript: a line per turn
            print("transcript:")
            for turn in turns:
                print(f"  {clip_line(turn if turn.startswith('[') else '[' + turn, 108)}")
        else:
            print(f"completion: {clip_line(s['completion'], 110)}")
        print("rewards:    " + ", ".join(f"{k[8:]}={s[k]:.3f}" for k in reward_keys))
    print("\nReward means over the batch:")
    for key in ["reward", "reward_std", *sorted(k for k in metrics if k.startswith("rewards/") and k.endswith("/mean"))]:
        print(f"  {key:<40} {metrics[key]:.4f}")


def print_eval_summary(trainer) -> None:
    """Base (step 0) vs tuned (last step) on the held-out prompts, from the run's eval records."""
    from grpo_ray.evaluation.records import read_eval_json
    from grpo_ray.evaluation.table import markdown_table

    out = trainer.output_dir
    print(f"report: {out / 'report.png'}")
    first, last = out / "eval" / "step-0.json", out / "eval" / f"step-{trainer.step}.json"
    if not trainer.evaluator.enabled or not first.is_file() or not last.is_file():
        return
    before, after = read_eval_json(first), read_eval_json(last)
    print(f"\nHeld-out evaluation ({after['count']} prompts of split {trainer.cfg.eval.split!r}, greedy):\n")
    print(markdown_table({"base": before["means"], f"tuned (step {trainer.step})": after["means"]},
                         trainer.evaluator.metrics))
