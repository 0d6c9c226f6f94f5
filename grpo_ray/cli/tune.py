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
import sys


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
    """Run the sweep and print its table, best trial and where its files are."""
    from grpo_ray.sweep.results import UNFINISHED, best_trial, plot_trials, table_rows, write_best, write_tables
    from grpo_ray.sweep.runner import expected_trials, fit_sweep

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    spec, sweep_dir = plan.spec, plan.sweep_dir
    records = fit_sweep(plan)
    rows = table_rows(records, list(spec.search_space), spec.metric, spec.mode)
    csv_path, md_path = write_tables(rows, sweep_dir)
    png = plot_trials(records, sweep_dir / "trials.png", spec.metric, title=f"sweep {spec.name}: {len(records)} trials")
    print(f"\nSweep {spec.name}: {len(records)} trials, metric {spec.metric} ({spec.mode})\n")
    print(md_path.read_text())
    print(f"table: {csv_path}\ncurves: {png}")
    expected = expected_trials(spec)
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
