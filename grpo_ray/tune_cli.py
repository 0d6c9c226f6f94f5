"""``grpo-ray tune``: a Ray Tune sweep of GRPO runs, each trial on its own actors.

    grpo-ray tune --config tune_configs/cpu_tiny.yaml [key=value ...]

Overrides whose first part is a train-config section (``learner.lr=...``, ``trainer.steps=...``) fix
that key for every trial; the others change the sweep itself (``num_samples=8``,
``scheduler.name=pbt``). The sweep is validated, every trial config included, before Ray starts.
Running the same command again resumes an interrupted sweep; a finished one is only re-summarised.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from grpo_ray.errors import UserError


def add_tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="sweep hyperparameters with Ray Tune (ASHA by default); see tune_configs/")
    p.add_argument("--config", required=True, help="sweep YAML (see tune_configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="train-config keys fix a value for every trial; other keys change the sweep")
    p.add_argument("--validate", action="store_true", help="check the sweep and every trial config, then exit")
    p.set_defaults(func=_cmd_tune)


def _cmd_tune(args: argparse.Namespace) -> int:
    from grpo_ray.sweep.spec import load_sweep

    plan = load_sweep(args.config, args.overrides)
    if args.validate:
        print(f"{args.config}: valid ({plan.check_every_trial()} extreme-value trial configs checked)")
        return 0
    return run_sweep(plan)


def run_sweep(plan) -> int:
    import ray
    from ray import tune

    from grpo_ray.cluster import init_ray, trial_bundles
    from grpo_ray.sweep.results import UNFINISHED, best_trial, plot_trials, records_from_results, table_rows, write_best, write_tables
    from grpo_ray.sweep.search import make_scheduler, make_search_alg, param_space
    from grpo_ray.sweep.trial import run_trial

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    spec, sweep_dir = plan.spec, plan.sweep_dir
    max_steps = plan.base.trainer.steps
    save_every = spec.scheduler.perturbation_interval if spec.scheduler.name == "pbt" else None
    trial_cpus = sum(b.get("CPU", 0) for b in trial_bundles(plan.base, spec.resources.driver_cpus))
    init_ray(plan.base, min_cpus=trial_cpus * spec.max_concurrent_trials)

    def resources(params):  # per trial: the search space may change actor counts
        cfg = plan.trial_config(params, sweep_dir)
        return tune.PlacementGroupFactory(trial_bundles(cfg, spec.resources.driver_cpus), strategy="PACK")

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, plan=plan, launch_dir=os.getcwd(), save_every=save_every), resources,
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
                failure_config=tune.FailureConfig(max_failures=0), verbose=1,
            ),
        )
    try:
        grid = tuner.fit()
    finally:
        ray.shutdown()

    records = records_from_results(grid, plan, max_steps)
    rows = table_rows(records, list(spec.search_space), spec.metric, spec.mode)
    csv_path, md_path = write_tables(rows, sweep_dir)
    png = plot_trials(records, sweep_dir / "trials.png", spec.metric, title=f"sweep {spec.name}: {len(records)} trials")
    print(f"\nSweep {spec.name}: {len(records)} trials, metric {spec.metric} ({spec.mode})\n")
    print(md_path.read_text())
    print(f"table: {csv_path}\ncurves: {png}")
    expected = _expected_trials(spec)
    unfinished = [r for r in records if r.status == UNFINISHED]
    if unfinished or len(records) < expected:
        done = sum(r.status != UNFINISHED for r in records)
        print(f"\ninterrupted: {done} of {expected} trials finished; run the same command again to "
              "resume the sweep", file=sys.stderr)
        return 130
    best = best_trial(records, spec.metric, spec.mode)
    if best is None:
        print("no trial reported the metric; see the errors above", file=sys.stderr)
        return 1
    best_yaml = write_best(best, sweep_dir, spec.metric)
    print(f"\nbest trial {best.trial_id}: " + ", ".join(f"{k}={v}" for k, v in best.params.items())
          + f"; final {spec.metric} = {best.final(spec.metric):.4g}")
    print(f"best config: {best_yaml}\nbest adapter: {best.adapter()}")
    return 0 if all(r.status != "error" for r in records) else 1


def _expected_trials(spec) -> int:
    """Trials the sweep will run: num_samples times the grid's size."""
    import math

    grid = math.prod(len(d.values) for d in spec.search_space.values()
                     if d.kind == "grid" or (spec.search.algorithm == "grid" and d.kind == "choice"))
    return spec.num_samples * grid
