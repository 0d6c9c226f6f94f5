"""``grpo-ray tune`` as a user runs it: a real Ray Tune sweep whose trials each start their own
rollout, reward and DeepSpeed learner actors (tune_helpers.py has the sweep file).

Two trials, one at a time, in grid order: the first learns (lr 1e-3), the second has lr 0 and
cannot. The metric is held-out greedy correctness, evaluated every 2 steps: the lr-0 trial keeps the
base model's score exactly (greedy decoding of unchanged weights), while a learning trial gains
5-10 points by step 2 (measured on these 30 problems: 0.0 -> 0.10). ASHA must stop the lr-0
trial at its first rung.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from .tune_helpers import GRACE, LRS, METRIC, STEPS, grpo_ray, tune_results, write_sweep

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The sweep, each trial with its own actors, run through."""
    tmp = tmp_path_factory.mktemp("tune")
    path = write_sweep(tmp)
    done = grpo_ray("tune", "--config", str(path), cwd=tmp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return tmp, tmp / "sweeps" / "toy", done.stdout


def test_asha_stops_the_lr0_trial_and_the_table_matches_the_trials(sweep):
    tmp, sweep_dir, stdout = sweep
    rows = list(csv.DictReader(open(sweep_dir / "results.csv")))
    assert len(rows) == len(LRS) and sorted(float(r["learner.lr"]) for r in rows) == sorted(LRS)
    by_lr = {float(r["learner.lr"]): r for r in rows}
    assert by_lr[0.0]["status"] == "stopped early" and int(by_lr[0.0]["steps"]) == GRACE
    assert by_lr[LRS[0]]["status"] == "completed" and int(by_lr[LRS[0]]["steps"]) == STEPS
    assert float(by_lr[0.0][f"final {METRIC}"]) < float(by_lr[LRS[0]][f"best {METRIC}"])

    # every row agrees with what Tune recorded for that trial
    trial_dirs = [d for d in sweep_dir.iterdir() if (d / "result.json").is_file()]
    assert len(trial_dirs) == len(LRS)
    for d in trial_dirs:
        reports = tune_results(d)
        lr = reports[-1]["config"]["learner.lr"]
        row = by_lr[lr]
        assert row["trial"] == reports[-1]["trial_id"]
        assert int(row["steps"]) == reports[-1]["step"] == len(reports)
        assert float(row[f"final {METRIC}"]) == pytest.approx(reports[-1][METRIC], rel=1e-6)
        assert float(row[f"best {METRIC}"]) == pytest.approx(max(r[METRIC] for r in reports), rel=1e-6)
        # each trial ran its own engine: its learner trained with the trial's learning rate
        assert reports[-1]["learning_rate"] == pytest.approx(lr)

    assert "| trial | learner.lr |" in (sweep_dir / "results.md").read_text() and "best trial" in stdout
    png = (sweep_dir / "trials.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 20_000


def test_best_config_is_a_valid_training_config_with_the_best_params(sweep):
    """best_config.yaml is what ``grpo-ray train --config`` reads: the sweep's train config with the best
    trial's parameters, passing the same validation (training from it is train's own test's business)."""
    from grpo_ray.config import load_config
    from grpo_ray.models.paths import resolve_adapter_path

    tmp, sweep_dir, _ = sweep
    best = json.loads((sweep_dir / "best_trial.json").read_text())
    assert best["params"]["learner.lr"] > 0
    assert Path(best["adapter"], "adapter_model.safetensors").is_file()
    # the sweep dir names that adapter (adapter.json), so --adapter SWEEP_DIR takes it
    assert resolve_adapter_path(str(sweep_dir)).resolve() == Path(best["adapter"]).resolve()
    cfg = load_config(sweep_dir / "best_config.yaml", [])
    assert cfg.learner.lr == best["params"]["learner.lr"] and cfg.trainer.steps == STEPS
    assert cfg.rollout.engine == "hf" and cfg.eval.every == GRACE  # the sweep's fixed settings came along
    assert Path(cfg.trainer.output_dir).resolve() == (sweep_dir / "best_run").resolve()


def test_the_same_command_on_a_finished_sweep_writes_its_summary_again(sweep):
    """How a sweep dir written before adapter.json existed gets one: nothing is trained again."""
    from grpo_ray.models.paths import resolve_adapter_path

    tmp, sweep_dir, _ = sweep
    best = json.loads((sweep_dir / "best_trial.json").read_text())
    (sweep_dir / "adapter.json").unlink()
    done = grpo_ray("tune", "--config", str(tmp / "sweep.yaml"), cwd=tmp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "resuming the sweep" in done.stderr
    assert resolve_adapter_path(str(sweep_dir)).resolve() == Path(best["adapter"]).resolve()
    assert json.loads((sweep_dir / "best_trial.json").read_text())["final"] == best["final"]


def test_invalid_search_space_is_rejected_before_any_trial(tmp_path):
    # 8 prompts x G=6 = 48 completions, not a multiple of the micro batch of 64
    path = write_sweep(tmp_path, search_space={"rollout.group_size": {"choice": [8, 6]}})
    done = grpo_ray("tune", "--config", str(path), cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "rollout.group_size=6" in lines[0] and "micro" in lines[0]
    assert not (tmp_path / "sweeps").exists()  # nothing started, nothing written
