"""scripts/install.sh: its refusals come before anything is installed, as one line; it byte-compiles the stack."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def run(**env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "install.sh")], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_there_is_no_cuda_12_route_and_it_says_what_to_do() -> None:
    done = run(GRPO_RAY_CUDA="cu129")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "CUDA forward compatibility" in done.stderr


def test_an_unknown_target_is_refused() -> None:
    done = run(GRPO_RAY_TARGET="tpu")
    assert done.returncode == 2 and "GRPO_RAY_TARGET must be cpu, gpu or auto, not 'tpu'" in done.stderr


def test_no_wheel_url_is_built_by_hand() -> None:
    assert "releases/download" not in (ROOT / "scripts" / "install.sh").read_text()


@pytest.mark.parametrize("module", ["torch", "transformers", "peft", "deepspeed", "vllm", "ray"])
def test_the_install_left_the_stack_byte_compiled(module: str) -> None:
    # Every Ray actor imports these when it starts; uncompiled, each start recompiles them (and never
    # caches them where PYTHONDONTWRITEBYTECODE is set), which doubled the suite's time
    import importlib.util
    source = importlib.util.find_spec(module).origin
    assert Path(importlib.util.cache_from_source(source)).is_file(), f"{module} is not byte-compiled: rerun install.sh"
