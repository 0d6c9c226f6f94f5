"""``grpo-ray tune`` as a user runs it: a real Ray Tune sweep whose trials each start their own
rollout, reward and DeepSpeed learner actors, on the embedded default (the 1.6M-parameter built-in
model and arithmetic task) shortened to 4 steps. The rollout engine is transformers' generate, which
starts in seconds: vLLM is the engine's and the CLI's tests' business, this one is about Tune.

Two trials, one at a time, in grid order: the first learns (lr 1e-3), the second has lr 0 and
cannot. The metric is held-out greedy correctness, evaluated every 2 steps: the lr-0 trial keeps the
base model's score exactly (greedy decoding of unchanged weights), while a learning trial gains
5-10 points by step 2 (measured on these 30 problems: 0.0 -> 0.10). ASHA must stop the lr-0
trial at its first rung. The shared-base sweep (one set of actors for its trials) is interrupted once
(Ctrl-C once a trial has a checkpoint at step 2 and has gone past it) and resumed by running the
same command again: its resume rebuilds
the shared actors and each trial's learner slot from the trial's own checkpoint, which is more than a
separate trial's resume does. A second shared-base sweep runs under PBT: its lr-0 trial exploits the
other and goes on from that trial's checkpoint in its own slot.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

STEPS, GRACE = 4, 2
LRS = [1e-3, 0.0]
REPO = Path(__file__).resolve().parents[2]
METRIC = "eval/hard_correctness"


SWEEP_SET = {"rollout.engine": "hf", "data.limit": 512, "trainer.steps": STEPS, "trainer.save_every": 2,
             "trainer.log_completions_every": 0, "learner.lr_scheduler": "constant", "eval.every": GRACE, "eval.limit": 30}
# a shared sweep's trials generate and update at the same time, so its engine and learner get one core each
# (tune_configs/cpu_tiny_shared.yaml does the same: two threads each on two cores made every step slower)
SHARED_CPUS = {"rollout.num_cpus_per_worker": 1, "learner.num_cpus_per_learner": 1}


def grpo_ray_exe() -> str:
    return shutil.which("grpo-ray") or str(Path(sys.executable).parent / "grpo-ray")


def grpo_ray(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([grpo_ray_exe(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def write_sweep(tmp_path: Path, **changes) -> Path:
    sweep = {
        "name": "toy", "train": str(REPO / "examples" / "tiny_cpu.yaml"), "set": SWEEP_SET,
        "search_space": {"learner.lr": {"grid": LRS}},
        "scheduler": {"name": "asha", "grace_period": GRACE, "reduction_factor": 2},
        "num_samples": 1, "max_concurrent_trials": 1, "metric": METRIC, "mode": "max",
        "resources": {"driver_cpus": 0.5}, "output_dir": str(tmp_path / "sweeps"), **changes,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def trial_reports(trial_dir: Path) -> list[dict]:
    """Every report Tune wrote to the trial's result.json, in order (one JSON object a line; a line still
    being written while the sweep runs is left out)."""
    return [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines() if x.strip().endswith("}")]


def reported_steps(sweep_dir: Path) -> dict[str, int]:
    """Each trial's newest step in Tune's result.json: the driver writes a report there once it has
    processed it, and processes a trial's next report only after the checkpoint handed in with the one
    before is registered."""
    steps = {}
    for results in sweep_dir.glob("*/result.json"):
        steps[results.parent.name] = max((r["step"] for r in trial_reports(results.parent)), default=0)
    return steps


def interrupt_after_a_checkpoint(path: Path, cwd: Path, sweep_dir: Path) -> tuple[int, str, float]:
    """Run the sweep and press Ctrl-C once a trial has reported the step after its first checkpoint
    (step 2), so Tune holds that checkpoint when it saves the sweep: Ctrl-C at the moment a trial writes
    a checkpoint may come before the driver registers it, and the trial then starts over. The files are
    polled beside the output, which may be quiet for a while."""
    proc = subprocess.Popen([grpo_ray_exe(), "tune", "--config", str(path)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    interrupted_at = 0.0
    while proc.poll() is None:
        if any(step > GRACE for step in reported_steps(sweep_dir).values()):
            interrupted_at = time.time()
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.5)
    code = proc.wait(timeout=300)
    reader.join(timeout=60)
    return code, "".join(lines), interrupted_at


def interrupted_and_resumed(path: Path, cwd: Path, sweep_dir: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Ctrl-C after a trial kept its step-2 checkpoint, then the same command again."""
    code, output, interrupted_at = interrupt_after_a_checkpoint(path, cwd, sweep_dir)
    assert code == 130 and "run the same command again to resume" in output, output[-3000:]
    assert "unfinished" in output and "stopped early" not in output, output[-3000:]
    done = grpo_ray("tune", "--config", str(path), cwd=cwd)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "resuming the sweep" in done.stderr
    return done, interrupted_at


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The sweep, each trial with its own actors, run through."""
    tmp = tmp_path_factory.mktemp("tune")
    path = write_sweep(tmp)
    done = grpo_ray("tune", "--config", str(path), cwd=tmp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return tmp, tmp / "sweeps" / "toy", done.stdout


def tune_results(trial_dir: Path) -> list[dict]:
    """Tune's own record of what the trial reported (result.json, one JSON object per report), the
    newest report of each step (a trial resumed from its step-2 checkpoint may have reported step 3
    before the interruption, and again after)."""
    return list({r["step"]: r for r in trial_reports(trial_dir)}.values())


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
