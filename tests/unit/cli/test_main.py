"""The grpo-ray command line: config show / validate / fields, exit codes and error lines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grpo_ray.cli import main

pytestmark = pytest.mark.unit

TINY = str(Path(__file__).resolve().parents[3] / "examples" / "tiny_cpu.yaml")


def test_show_prints_the_resolved_config_with_overrides(capsys):
    assert main(["config", "show", TINY, "algo.beta=0.04", "rollout.group_size=2", "learner.micro_batch_size=8"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["algo"]["beta"] == 0.04 and shown["rollout"]["group_size"] == 2
    # defaults the file left out are filled in, so the printout is the whole run
    assert shown["algo"]["kl_estimator"] == "k3" and "lora" in shown["model"]


def test_validate_ok(capsys):
    assert main(["config", "validate", TINY]) == 0
    assert "valid" in capsys.readouterr().out


def test_typo_exits_2_with_one_line(capsys):
    assert main(["config", "validate", TINY, "algo.bta=0.04"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["grpo-ray: config error: unknown config key 'algo.bta': did you mean 'algo.beta'?"]


def test_invalid_value_exits_2_naming_it(capsys):
    assert main(["config", "show", TINY, "rollout.temperature=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rollout.temperature=-1" in err[0]


def test_missing_file_exits_2(capsys, tmp_path):
    assert main(["config", "validate", str(tmp_path / "none.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_fields_lists_descriptions(capsys):
    assert main(["config", "fields", "algo"]) == 0
    out = capsys.readouterr().out
    assert "algo.beta" in out and "KL penalty" in out and "learner.lr" not in out


def test_console_script_is_installed():
    exe = shutil.which("grpo-ray") or str(Path(sys.executable).parent / "grpo-ray")
    if not Path(exe).exists():
        pytest.fail("the grpo-ray console script is not installed; run scripts/install.sh")
    done = subprocess.run([exe, "config", "validate", TINY, "algo.loss_type=nope"], capture_output=True, text=True)
    assert done.returncode == 2 and "algo.loss_type='nope'" in done.stderr
