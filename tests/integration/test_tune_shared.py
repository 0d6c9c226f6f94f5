"""A ``grpo-ray tune`` sweep with ``share_base``: one set of rollout, reward and learner actors for all
its trials, each trial in its own learner slot. It is interrupted once (Ctrl-C once a trial has a
checkpoint at step 2 and has gone past it) and resumed by running the same command again: its resume
rebuilds the shared actors and each trial's learner slot from the trial's own checkpoint, which is more
than a separate trial's resume does.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from .tune_helpers import GRACE, METRIC, SHARED_CPUS, STEPS, SWEEP_SET, interrupted_and_resumed, tune_results, write_sweep

pytestmark = pytest.mark.integration


SHARED_LRS = [1e-3, 1e-3, 0.0]  # two equal trials together first, then the lr-0 one against their rung


@pytest.fixture(scope="module")
def shared_sweep(tmp_path_factory):
    """Three trials with share_base, two at a time, on one rollout worker, reward worker and learner. The
    two equal trials run together (each in its own learner slot); the lr-0 trial starts when one of them
    ends, so ASHA's rung already holds their step-2 results when it reports its own (with trials running
    together, what ASHA stops depends on the order they reach a rung in). Interrupted once and resumed."""
    tmp = tmp_path_factory.mktemp("tune_shared")
    path = write_sweep(tmp, name="shared", share_base=True, max_concurrent_trials=2,
                       search_space={"learner.lr": {"grid": SHARED_LRS}}, set={**SWEEP_SET, **SHARED_CPUS})
    done, interrupted_at = interrupted_and_resumed(path, tmp, tmp / "sweeps" / "shared")
    return tmp / "sweeps" / "shared", done.stdout, done.stderr, interrupted_at


def test_a_shared_base_sweep_runs_its_trials_together_on_one_learner(shared_sweep):
    sweep_dir, stdout, stderr, interrupted_at = shared_sweep
    rows = list(csv.DictReader(open(sweep_dir / "results.csv")))
    assert sorted(float(r["learner.lr"]) for r in rows) == sorted(SHARED_LRS)
    stopped = [r for r in rows if float(r["learner.lr"]) == 0.0]
    learned = [r for r in rows if float(r["learner.lr"]) > 0]
    # ASHA stopped the lr-0 trial; Tune's callback gave its slot back, and the others' at their end
    assert stopped[0]["status"] == "stopped early" and int(stopped[0]["steps"]) == GRACE
    assert all(r["status"] == "completed" and int(r["steps"]) == STEPS for r in learned)
    assert float(stopped[0][f"final {METRIC}"]) < float(learned[0][f"best {METRIC}"])
    assert "slots still open: none" in stderr
    switches = int(stderr.split("shared learner: ")[1].split(" slot switches")[0])
    assert switches >= 4, stderr[-2000:]  # the trials' calls took turns on the one learner
    reports = {d.name: tune_results(d) for d in sweep_dir.iterdir() if (d / "result.json").is_file()}
    for trial in reports.values():  # each trial's slot trained with the trial's own learning rate
        assert trial[-1]["learning_rate"] == pytest.approx(trial[-1]["config"]["learner.lr"])
    a, b = [r for r in reports.values() if r[-1]["config"]["learner.lr"] > 0]
    assert a[0]["timestamp"] <= b[-1]["timestamp"] and b[0]["timestamp"] <= a[-1]["timestamp"]  # they ran together
    # taking turns on the shared engine and learner, and each resumed from its own checkpoint after the
    # interruption (a fresh learner slot, restored), two equal trials made the same run
    assert [r[METRIC] for r in a] == [r[METRIC] for r in b] and [r["reward"] for r in a] == [r["reward"] for r in b]
    went_on = []
    for d in sweep_dir.iterdir():  # a trial that continued from its checkpoint logged each step once
        if (d / "run" / "metrics.jsonl").is_file():
            logged = [json.loads(x) for x in (d / "run" / "metrics.jsonl").read_text().splitlines()]
            steps = [r["step"] for r in logged]
            assert steps == list(range(steps[-1] + 1)), (d.name, steps)
            went_on.append(logged[GRACE]["time"] < interrupted_at < logged[-1]["time"])
    # the trial whose step-3 report set off the Ctrl-C went on from its step-2 checkpoint, not from the start
    assert any(went_on), went_on
    best = json.loads((sweep_dir / "best_trial.json").read_text())
    assert best["params"]["learner.lr"] == 1e-3 and Path(best["adapter"], "adapter_model.safetensors").is_file()
