"""``grpo-ray train``: run a training job, or a dry run, and present the result on the terminal."""

from __future__ import annotations

import logging
import signal
import sys

from grpo_ray.config import GRPOConfig
from grpo_ray.errors import UserError


def _sigterm_as_interrupt(signum, frame):  # so `kill` shuts actors down like Ctrl-C does
    raise KeyboardInterrupt


def run_train(cfg: GRPOConfig, *, dry_run: bool = False) -> int:
    from grpo_ray.data.sources import DataSourceError
    from grpo_ray.driver import GRPOTrainer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    trainer = GRPOTrainer(cfg)
    try:
        try:
            trainer.setup(learners=not dry_run)
        except (FileNotFoundError, DataSourceError) as err:
            raise UserError(str(err)) from None
        if dry_run:
            print_dry_run(trainer.dry_run())
            return 0
        trainer.train()
        print(f"done: {trainer.step} steps; checkpoints in {trainer.checkpoints.root}")
        return 0
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {trainer.step}; the last complete checkpoint is kept", file=sys.stderr)
        return 130
    finally:
        trainer.shutdown()


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_dry_run(result: dict) -> None:
    samples, metrics = result["samples"], result["metrics"]
    reward_keys = [k for k in samples[0] if k.startswith("rewards/")] if samples else []
    print("\nSample completions from the starting policy (no update was made):\n")
    for i, s in enumerate(samples):
        print(f"--- sample {i}   reward {s['reward']:.3f}")
        print(f"question:   {_clip(s['prompt'], 110)}")
        print(f"answer:     {_clip(s['answer'], 110)}")
        print(f"completion: {_clip(s['completion'], 110)}")
        print("rewards:    " + ", ".join(f"{k[8:]}={s[k]:.3f}" for k in reward_keys))
    print("\nReward means over the batch:")
    for key in ["reward", "reward_std", *sorted(k for k in metrics if k.startswith("rewards/") and k.endswith("/mean"))]:
        print(f"  {key:<40} {metrics[key]:.4f}")
