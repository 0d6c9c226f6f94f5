"""The python tool's sandbox: no network, none of the run's files, a time and a memory limit, and the
program's output (or why it was stopped) handed back. Skips where this machine allows no namespaces."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from grpo_ray.tools.sandbox import SandboxLimits, python, run_sandboxed, sandbox_level

pytestmark = pytest.mark.unit

needs_namespaces = pytest.mark.skipif(sandbox_level() == "none", reason="this machine allows no Linux namespaces")


@needs_namespaces
def test_a_program_runs_and_its_output_comes_back() -> None:
    assert python("print(sum(range(10)))") == "45"
    assert "ZeroDivisionError" in python("1 / 0")


@needs_namespaces
def test_no_network() -> None:
    out = python("import socket\ns = socket.socket()\ntry:\n    s.connect(('1.1.1.1', 80))\n    print('connected')\n"
                 "except OSError as e:\n    print('refused', e.errno)")
    assert out.startswith("refused")


@needs_namespaces
def test_no_access_to_the_runs_files(tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the run's data")
    here = Path(__file__).resolve()
    out = python(f"import os\nprint(os.path.exists({str(secret)!r}), os.path.exists({str(here)!r}), os.getcwd())")
    assert out == "False False /tmp"
    assert "Permission" in python("open('/usr/evil', 'w')") or "Read-only" in python("open('/usr/evil', 'w')")


@needs_namespaces
def test_a_busy_loop_stops_at_its_cpu_limit_and_a_sleep_at_its_wall_limit() -> None:
    start = time.perf_counter()
    status, _ = run_sandboxed("while True: pass", SandboxLimits(wall_s=10, cpu_s=1))
    assert status != 0 and time.perf_counter() - start < 8
    start = time.perf_counter()
    status, _ = run_sandboxed("import time\ntime.sleep(60)", SandboxLimits(wall_s=2, cpu_s=1))
    assert status == 137 and time.perf_counter() - start < 8
    assert python("while True: pass").endswith("[stopped: it ran past its time or memory limit]")


@needs_namespaces
def test_memory_is_capped() -> None:
    assert "MemoryError" in python("x = bytearray(2 * 1024 ** 3)")
