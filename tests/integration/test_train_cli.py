"""``grpo-ray train`` as a user runs it: the installed console script, a fresh Ray cluster, vLLM.

The example config is used as written, with the model pointed at the tiny test model and the run
shortened. What a user gets must be there: progress output, checkpoints that PEFT loads, metrics that
TensorBoard reads, and a dry run that shows samples and reward means without training.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tiny_cpu.yaml"


def grpo_ray(*args: str, cwd: Path, timeout: int = 420) -> subprocess.CompletedProcess:
    exe = shutil.which("grpo-ray") or str(Path(sys.executable).parent / "grpo-ray")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def common(tiny_model_dir, out) -> list[str]:
    return [
        f"model.name_or_path={tiny_model_dir}", f"trainer.output_dir={out}", "data.max_prompt_tokens=256",
        "rollout.max_completion_tokens=16",
    ]


def test_train_writes_checkpoints_metrics_and_tensorboard(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    done = grpo_ray(
        "train", "--config", str(EXAMPLE), *common(tiny_model_dir, out),
        "trainer.steps=2", "trainer.save_every=1", "trainer.log_completions_every=1", "eval.limit=12", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done: 2 steps" in done.stdout
    # held-out evaluation before and after, printed as the base-vs-tuned table, plotted in report.png
    assert "| metric | base | tuned (step 2) | change | max |" in done.stdout
    assert "| strict format |" in done.stdout
    before, after = (json.loads((out / "eval" / f"step-{s}.json").read_text()) for s in (0, 2))
    assert before["count"] == after["count"] == 12 and before["step"] == 0 and after["step"] == 2
    assert set(before["means"]) == {"hard_correctness", "soft_correctness", "integer", "soft_format", "strict_format"}
    assert len(before["samples"]) == 5 and {"question", "response", "extracted"} <= set(before["samples"][0])
    png = (out / "report.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 20_000

    ckpt = out / "checkpoints" / "step-000002"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert (out / "checkpoints" / "step-000001" / "COMPLETE").is_file() and (ckpt / "COMPLETE").is_file()
    state = json.loads((ckpt / "driver_state.json").read_text())
    assert state["step"] == 2 and state["version"] == 2

    # the adapter is a plain PEFT folder
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from safetensors.torch import load_file

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ckpt / "adapter")
    saved = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    loaded = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
    assert saved.keys() == loaded.keys() and len(saved) > 0
    assert all(bool((loaded[k] == saved[k]).all()) for k in saved)

    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # step 0 holds only the starting policy's evaluation; the last step carries the final one
    assert [x["step"] for x in lines] == [0, 1, 2] and set(lines[0]) >= {"eval/hard_correctness", "timing/eval"}
    assert all("reward" in x and "timing/generate" in x for x in lines[1:])
    assert "eval/strict_format" in lines[2] and "eval/strict_format" not in lines[1]
    # a random model earns no arithmetic reward: every group ties, which the metric must say
    assert all(x["frac_reward_zero_std"] == 1.0 for x in lines[1:])
    assert (out / "completions.jsonl").read_text().strip()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert {"reward", "entropy", "timing/update"} <= set(acc.Tags()["scalars"])
    assert len(acc.Scalars("reward")) == 2 and len(acc.Scalars("eval/hard_correctness")) == 2


def test_dry_run_shows_samples_and_reward_means_without_training(ray_cluster, tiny_model_dir, tmp_path, capsys):
    """The command's own function, in this process on the session's cluster (the console script and a
    fresh cluster are the test above's)."""
    from grpo_ray.cli import main

    out = tmp_path / "dry"
    # the transformers engine starts in seconds; the run above goes through vLLM
    assert main(["train", "--config", str(EXAMPLE), *common(tiny_model_dir, out), "rollout.engine=hf", "--dry-run"]) == 0
    stdout = capsys.readouterr().out
    assert "--- sample 0" in stdout and "Reward means over the batch" in stdout
    for name in ["correctness", "strict_format", "xml_count"]:
        assert f"rewards/{name}/mean" in stdout
    assert not (out / "checkpoints").exists()


def test_bad_data_source_is_one_line_and_exit_2(tiny_model_dir, tmp_path):
    done = grpo_ray(
        "train", "--config", str(EXAMPLE), *common(tiny_model_dir, tmp_path / "x"),
        f"data.source={tmp_path / 'missing.jsonl'}", cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("grpo-ray: ") and "missing.jsonl" in last
