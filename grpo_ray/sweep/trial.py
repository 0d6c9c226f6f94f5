"""One Tune trial: a whole GRPO run on the trial's own actors (or, in a shared-base sweep, on the
sweep's rollout workers and a slot of its learner: ``grpo_ray.sweep.shared``), reporting every step.

The trial's placement group (reserved by Tune from :func:`grpo_ray.cluster.trial_bundles`) holds this
driver's bundle and every actor's, so the rollout, reward and learner workers are placed in it. Each
step's metrics go to Tune with the newest eval metrics carried along (schedulers need the sweep metric
in every report); a step that saved a checkpoint hands it to Tune too, so PBT can copy a trial's
adapter and optimizer into another, and an interrupted sweep resumes trials where they were.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

from ray import tune
from ray.util import get_current_placement_group

from grpo_ray.cluster import ROLES
from grpo_ray.sweep.spec import SweepPlan

RUN_DIR = "run"  # the trial's train output dir, inside its Tune trial folder


def trial_output_dir() -> Path:
    """The trial's folder in the sweep dir itself (Tune's storage path), not Tune's per-session
    staging copy: a restored sweep runs in a new Ray session and must find the run's files there.
    On several nodes the sweep dir must be a shared filesystem, as Ray requires of a local storage_path."""
    ctx = tune.get_context()
    try:
        return Path(ctx.get_storage().trial_fs_path) / RUN_DIR
    except AttributeError:  # get_storage is a developer API; fall back to the staging dir
        return Path(ctx.get_trial_dir()) / RUN_DIR


def run_trial(params: dict[str, Any], *, plan: SweepPlan, launch_dir: str, save_every: Optional[int],
              shared: Optional[Any] = None, tokenizer: Any = None) -> None:
    """The Tune function trainable. ``params``: this trial's sampled values, by dotted key. ``shared``:
    the base-model actors of a shared-base sweep (``grpo_ray.sweep.shared.SharedBase``). ``tokenizer``:
    the sweep's train-config model's, loaded once by the sweep (a trial whose model differs loads its own)."""
    from grpo_ray.run.trainer import GRPOTrainer

    if os.path.isdir(launch_dir):  # relative paths in the config mean what they meant where the sweep started
        os.chdir(launch_dir)
    out = trial_output_dir()
    cfg = plan.trial_config(params, out)
    updates: dict[str, Any] = {"sinks": [s for s in cfg.trainer.sinks if s != "console"] or ["jsonl"]}
    if save_every:
        updates["save_every"] = save_every
    checkpoint = tune.get_checkpoint()
    restored = out.parent / "restored"
    shutil.rmtree(restored, ignore_errors=True)
    if checkpoint is not None:  # PBT's copy of a better trial, or this trial's own after an interruption
        updates["resume"] = checkpoint.to_directory(str(restored))
    elif out.exists():  # an earlier attempt of this trial that left no checkpoint: start it over
        shutil.rmtree(out)
    cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update=updates)})
    if cfg.model.name_or_path != plan.base.model.name_or_path:
        tokenizer = None

    trainer = GRPOTrainer(cfg)
    try:
        if shared is not None:  # the rollout workers and the learner are the sweep's; this trial takes a slot
            from grpo_ray.sweep.shared import TrialWorkers

            workers = TrialWorkers(trial_group=get_current_placement_group(), shared=shared,
                                   slot=tune.get_context().get_trial_id(),
                                   trial_roles=tuple(r for r in ROLES if r not in shared.roles))
            workers.place_rollouts(cfg)
            trainer.setup(workers=workers, tokenizer=tokenizer)
        else:
            trainer.setup(trial_group=get_current_placement_group(), tokenizer=tokenizer)
        shutil.rmtree(restored, ignore_errors=True)  # loaded into the learners; the trial's own copy is in Tune's

        def report(step: int, metrics: dict[str, float], saved: Optional[Path]) -> None:
            result = {**trainer.last_eval, **metrics, "step": step}
            ckpt = tune.Checkpoint.from_directory(str(saved)) if saved is not None else None
            tune.report(result, checkpoint=ckpt)

        trainer.train(on_step=report)
    finally:
        trainer.shutdown()
