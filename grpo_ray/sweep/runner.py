"""Running a sweep: one Ray Tune trial per config, each on its own actors in a placement group it
reserves whole (:func:`grpo_ray.cluster.trial_bundles`), resumed when the sweep dir holds one."""

from __future__ import annotations

import logging
import os
import sys

from grpo_ray.errors import UserError
from grpo_ray.sweep.results import TrialRecord

log = logging.getLogger("grpo_ray.sweep")


def fit_sweep(plan) -> list[TrialRecord]:
    """Run (or resume) ``plan``'s sweep to its end or an interruption; the trials' records."""
    import ray
    from ray import tune

    from grpo_ray.cluster import ROLES, init_ray, trial_bundles
    from grpo_ray.run.trainer import load_tokenizer
    from grpo_ray.sweep.results import records_from_results
    from grpo_ray.sweep.search import make_scheduler, make_search_alg, param_space
    from grpo_ray.sweep.trial import run_trial

    spec, sweep_dir = plan.spec, plan.sweep_dir
    max_steps = plan.base.trainer.steps
    save_every = spec.scheduler.perturbation_interval if spec.scheduler.name == "pbt" else None
    # a shared-base trial starts only what it does not share: its reward workers when the trials' rewards differ
    share_rewards = spec.share_base and not any(key.startswith("reward.") for key in spec.search_space)
    shared_roles = (("rollout", "learner") + (("reward",) if share_rewards else ())) if spec.share_base else ()
    roles = tuple(r for r in ROLES if r not in shared_roles)
    trial_cpus = sum(b.get("CPU", 0) for b in trial_bundles(plan.base, spec.resources.driver_cpus, roles=roles))
    shared_cpus = sum(b.get("CPU", 0) for b in trial_bundles(plan.base, 0, roles=shared_roles))
    init_ray(plan.base, min_cpus=trial_cpus * spec.max_concurrent_trials + shared_cpus)

    def resources(params):  # per trial: the search space may change actor counts
        cfg = plan.trial_config(params, sweep_dir)
        return tune.PlacementGroupFactory(trial_bundles(cfg, spec.resources.driver_cpus, roles=roles), strategy="PACK")

    shared, callbacks = None, []
    if spec.share_base:
        from grpo_ray.sweep.shared import SharedBase, SlotCloser

        print("starting the base model's rollout workers and learner, shared by every trial", file=sys.stderr)
        shared = SharedBase.start(plan.trial_config({}, sweep_dir), rewards=share_rewards)
        callbacks.append(SlotCloser())
    # one tokenizer for every trial's driver, through the object store (grpo_ray.run.trainer.load_tokenizer)
    tokenizer = load_tokenizer(plan.base)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, plan=plan, launch_dir=os.getcwd(), save_every=save_every, shared=shared,
                             tokenizer=tokenizer),
        resources,
    )
    if tune.Tuner.can_restore(str(sweep_dir)):
        print(f"resuming the sweep in {sweep_dir}", file=sys.stderr)
        tuner = tune.Tuner.restore(str(sweep_dir), trainable, resume_unfinished=True, resume_errored=True)
    else:
        if sweep_dir.exists() and any(sweep_dir.iterdir()):
            raise UserError(f"{sweep_dir} holds files but no Tune experiment to resume; pick another name= or output_dir=")
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, scheduler=make_scheduler(spec, max_steps),
                search_alg=make_search_alg(spec), num_samples=spec.num_samples,
                max_concurrent_trials=spec.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=str(sweep_dir.parent),
                # PBT clones a trial from another's checkpoint, which must not be pruned under it
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None if spec.scheduler.name == "pbt" else spec.keep_checkpoints),
                failure_config=tune.FailureConfig(max_failures=0), verbose=1, callbacks=callbacks,
            ),
        )
    try:
        grid = tuner.fit()
        if shared is not None:
            stats = ray.get(shared.learner.slot_stats.remote())
            print(f"shared learner: {stats['switches']} slot switches; slots still open: "
                  f"{', '.join(stats['open']) or 'none'}", file=sys.stderr)
    finally:
        if shared is not None:
            shared.shutdown()
        ray.shutdown()
    return records_from_results(grid, plan, max_steps)


def expected_trials(spec) -> int:
    """Trials the sweep will run: num_samples times the grid's size."""
    import math

    grid = math.prod(len(d.values) for d in spec.search_space.values()
                     if d.kind == "grid" or (spec.search.algorithm == "grid" and d.kind == "choice"))
    return spec.num_samples * grid
