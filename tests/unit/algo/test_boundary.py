"""``grpo_ray.algo`` must import with ray, vllm, deepspeed and transformers unavailable.

The learner, the driver and these tests call the algorithm code directly; if it ever imported a heavy
framework (or a config module that does), every caller would need that framework and every test would
need mocks. A fresh interpreter blocks those packages before the import, so an import anywhere under
``grpo_ray.algo`` -- direct or through ``grpo_ray/__init__.py`` -- fails this test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[3]
BLOCKED = ["ray", "vllm", "deepspeed", "transformers", "trl", "accelerate", "peft", "pydantic", "yaml"]

SCRIPT = """
import importlib.abc, json, sys

BLOCKED = set(json.loads(sys.argv[1]))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: grpo_ray.algo must not import it")
        return None

sys.meta_path.insert(0, Block())
import grpo_ray.algo  # noqa: E402

print(json.dumps({
    "heavy": sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED),
    "grpo_ray": sorted(name for name in sys.modules if name.startswith("grpo_ray")),
}))
"""


def _import_algo_in_fresh_interpreter() -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(BLOCKED)],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"import grpo_ray.algo failed with heavy packages blocked:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_algo_imports_without_heavy_frameworks():
    loaded = _import_algo_in_fresh_interpreter()
    assert loaded["heavy"] == []
    # Only the algorithm package and the registry it builds on: no config objects, no actors.
    allowed = ("grpo_ray", "grpo_ray.algo", "grpo_ray.utils", "grpo_ray.utils.registry")
    outside = [name for name in loaded["grpo_ray"] if name not in allowed and not name.startswith("grpo_ray.algo.")]
    assert outside == []


def test_the_blocker_really_blocks():
    """Guards the guard: the same finder makes ``import ray`` fail, so a passing test means something."""
    script = SCRIPT.replace("import grpo_ray.algo  # noqa: E402", "import ray  # noqa: E402")
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(BLOCKED)], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "ray is blocked" in result.stderr
