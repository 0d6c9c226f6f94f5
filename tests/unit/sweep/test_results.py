"""The sweep's summary: statuses, the best trial, the tables and the best config."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from grpo_ray.run.checkpoints import CheckpointManager
from grpo_ray.models.paths import resolve_adapter_path
from grpo_ray.sweep.results import (
    COMPLETED, ERROR, STOPPED, TrialRecord, best_trial, status_of, table_rows, write_best, write_tables,
)

pytestmark = pytest.mark.unit


def record(tid, lr, rewards, status, run_dir):
    history = [{"step": i + 1, "reward": r} for i, r in enumerate(rewards)]
    return TrialRecord(tid, {"learner.lr": lr}, history, status, run_dir, config={"learner": {"lr": lr}, "trainer": {"steps": 4}})


def test_status_and_best(tmp_path) -> None:
    assert status_of([{"step": 4}], None, 4) == COMPLETED
    assert status_of([{"step": 2}], None, 4) == STOPPED
    assert status_of([], "boom", 4) == ERROR
    a = record("a", 1e-3, [0.1, 0.5, 0.4, 0.6], COMPLETED, tmp_path / "a")
    b = record("b", 0.0, [0.1, 0.9], STOPPED, tmp_path / "b")  # higher, but it did not finish
    c = record("c", 3e-3, [0.2, 0.3, 0.2, 0.3], COMPLETED, tmp_path / "c")
    assert best_trial([a, b, c], "reward", "max") is a
    assert best_trial([a, b, c], "reward", "min") is c
    assert best_trial([b], "reward", "max") is b  # nothing finished: the best of what reported
    assert a.best("reward", "max") == 0.6 and a.final("reward") == 0.6 and math.isnan(a.final("eval/x"))


def test_tables_and_best_config(tmp_path) -> None:
    a = record("a", 1e-3, [0.1, 0.6], COMPLETED, tmp_path / "a")
    b = record("b", 0.0, [0.1], STOPPED, tmp_path / "b")
    rows = table_rows([a, b], ["learner.lr"], "reward", "max")
    csv_path, md_path = write_tables(rows, tmp_path)
    back = list(csv.DictReader(open(csv_path)))
    assert [r["trial"] for r in back] == ["a", "b"] and back[1]["status"] == STOPPED and back[0]["steps"] == "2"
    assert "| a | 0.001 | 0.6 | 0.6 | 2 | completed |" in md_path.read_text()
    path = write_best(a, tmp_path, "reward")
    cfg = yaml.safe_load(path.read_text())
    assert cfg["learner"]["lr"] == 1e-3 and cfg["trainer"]["output_dir"] == str(tmp_path / "best_run")
    assert cfg["trainer"]["resume"] is None


def test_best_trials_adapter_is_what_the_sweep_dir_names(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    manager = CheckpointManager(sweep / "trial_a" / "run")
    for step in (2, 4):  # the latest complete checkpoint's adapter is the trial's
        staging = manager.begin(step)
        (staging / "adapter").mkdir()
        (staging / "adapter" / "adapter_config.json").write_text("{}")
        manager.commit(step, staging)
    a = record("a", 1e-3, [0.1, 0.6], COMPLETED, sweep / "trial_a" / "run")
    write_best(a, sweep, "reward")
    adapter = sweep / "trial_a" / "run" / "checkpoints" / "step-000004" / "adapter"
    assert resolve_adapter_path(str(sweep)) == adapter  # --adapter SWEEP_DIR in eval, generate, serve
    assert json.loads((sweep / "best_trial.json").read_text())["adapter"] == str(adapter)

    full = record("f", 1e-3, [0.7], COMPLETED, tmp_path / "no_run")  # a trial without an adapter
    write_best(full, sweep, "reward")
    assert not (sweep / "adapter.json").exists()  # the earlier best's pointer is not left behind
    assert json.loads((sweep / "best_trial.json").read_text())["adapter"] is None
