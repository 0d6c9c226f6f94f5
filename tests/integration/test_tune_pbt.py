"""A ``grpo-ray tune`` sweep with ``share_base`` under PBT: its lr-0 trial exploits the other and goes
on from that trial's checkpoint in its own slot on the shared learner.
"""

from __future__ import annotations

import csv
import json

import pytest

from .tune_helpers import SHARED_CPUS, grpo_ray, trial_reports, write_sweep

pytestmark = pytest.mark.integration


PBT_STEPS = 6


@pytest.fixture(scope="module")
def pbt_sweep(tmp_path_factory):
    """Two trials with share_base under PBT, together on one rollout worker and learner: lr 1e-3 and lr 0,
    exploit/explore every 2 steps. The metric is the trial's own learning rate, so PBT ranks the lr-0
    trial last whatever order the trials report in (a held-out score would tie at the base model's until
    one has learned), and no evaluation runs."""
    tmp = tmp_path_factory.mktemp("tune_pbt")
    path = write_sweep(tmp, name="pbt", share_base=True, max_concurrent_trials=2, metric="learning_rate",
                       search_space={"learner.lr": {"choice": [1e-3, 0.0]}}, search={"algorithm": "grid"},
                       scheduler={"name": "pbt", "perturbation_interval": 2, "quantile_fraction": 0.5,
                                  "resample_probability": 0.0},
                       set={"rollout.engine": "hf", "data.limit": 512, "trainer.steps": PBT_STEPS,
                            "trainer.log_completions_every": 0, "learner.lr_scheduler": "constant",
                            "eval.enabled": False, **SHARED_CPUS})
    done = grpo_ray("tune", "--config", str(path), cwd=tmp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return tmp / "sweeps" / "pbt", done.stderr


def kept(reports: list[dict]) -> list[dict]:
    """A trial's reports that its run kept: a restore (PBT's exploit, Tune's ``iterations_since_restore``
    back at 1) undoes the reports of its step and later that came before it."""
    run: list[dict] = []
    for r in reports:
        if r["iterations_since_restore"] == 1:
            run = [x for x in run if x["step"] < r["step"]]
        run.append(r)
    return run


def test_a_pbt_exploit_in_a_shared_sweep_continues_the_better_trial_in_the_worse_ones_slot(pbt_sweep):
    """PBT's exploit restarts the lr-0 trial from the lr-1e-3 trial's checkpoint: the trial reopens its
    slot on the shared learner and loads that checkpoint (adapter, optimizer, data cursor, RNG) into it, so
    its first step after the exploit samples exactly what the trial it copied sampled at that step; from
    then on it trains with its own (explored) learning rate, and every slot is given back at the end."""
    sweep_dir, stderr = pbt_sweep
    # Tune's log of each exploit: [trial, trial cloned, their report counts, the cloned one's config, the new one]
    exploits = [json.loads(line) for line in (sweep_dir / "pbt_global.txt").read_text().splitlines() if line.strip()]
    assert exploits, "PBT made no exploit"
    # every report of each trial, in order (a restarted trial reports some steps again)
    reports = {d.name: trial_reports(d) for d in sweep_dir.iterdir() if (d / "result.json").is_file()}
    by_lr = {trial[0]["config"]["learner.lr"]: trial for trial in reports.values()}
    better, worse = by_lr[1e-3], by_lr[0.0]
    _, _, _, better_reports, cloned_config, new_config = exploits[0]
    assert cloned_config["learner.lr"] == 1e-3  # the lr-0 trial cloned the lr-1e-3 one

    # its first report after the exploit (Tune counts iterations since the restore from 1 again, and its
    # iterations from the checkpoint's on; a report made before Tune stopped the trial may or may not have
    # been logged) is the step after the checkpoint it loaded, one of the better trial's (every 2 steps),
    # and samples what the better trial sampled at that step
    first = next(r for r in worse if r["iterations_since_restore"] == 1 and r["training_iteration"] > 1)
    assert first["step"] % 2 == 1 and first["step"] <= better_reports + 1, (better_reports, first["step"])
    assert first["config"]["learner.lr"] == new_config["learner.lr"]
    same_step = next(r for r in better if r["step"] == first["step"])
    assert first["reward"] == same_step["reward"] and first["completions/mean_length"] == same_step["completions/mean_length"]
    # each slot trained with its trial's learning rate of the moment, before and after the exploit, and
    # the reports each run kept (those no restore undid) go forward to the end (past the steps it took over)
    for trial in reports.values():
        run = kept(trial)
        steps = [r["step"] for r in run]
        assert steps == sorted(set(steps)) and steps[-1] == PBT_STEPS, steps
        assert all(r["learning_rate"] == pytest.approx(r["config"]["learner.lr"]) for r in run)
    assert "slots still open: none" in stderr
    rows = list(csv.DictReader(open(sweep_dir / "results.csv")))
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
