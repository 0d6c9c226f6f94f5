"""What the ``grpo-ray tune`` tests share: the sweep file they write (the embedded default, the built-in
model and arithmetic task, shortened to 4 steps, with transformers' generate as the rollout engine: it
starts in seconds, and vLLM is the engine's and the CLI's tests' business), the CLI they run it with, and
readers of what Tune recorded.

The sweeps are split over test_tune.py (each trial with its own actors, ASHA), test_tune_shared.py (a
shared-base sweep interrupted and resumed) and test_tune_pbt.py (a shared-base sweep under PBT), so that
pytest-xdist can run them on different workers.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

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


def tune_results(trial_dir: Path) -> list[dict]:
    """Tune's own record of what the trial reported (result.json, one JSON object per report), the
    newest report of each step (a trial resumed from its step-2 checkpoint may have reported step 3
    before the interruption, and again after)."""
    return list({r["step"]: r for r in trial_reports(trial_dir)}.values())
