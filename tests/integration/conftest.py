"""What the integration modules share: one local Ray cluster per session, and rollout engines per model.

Starting Ray costs seconds and a vLLM engine 15-45 s, so modules share them instead of each starting
its own:

- ``ray_cluster`` (session): a local cluster of 16 logical CPUs (the shared actors hold a few while
  idle, and actors mostly wait on each other), started by the first test that asks for it.
- ``tiny_vllm``, ``tiny_hf``, ``builtin_vllm`` (session): :class:`~grpo_ray.cluster.Workers` holding one
  rollout actor (and reward actors) on the tiny random model with vLLM and with transformers, and on
  ``builtin:arithmetic-base`` (examples/tiny_cpu.yaml) with vLLM. A trainer takes them with
  ``GRPOTrainer(cfg).setup(workers=...)`` and starts its own reward workers and learners, which hold its
  reward functions and optimizer state.

A module that needs a cluster of its own (fake GPUs, two nodes) is marked ``own_cluster``: those
modules run after every other one, and the shared cluster (with the shared actors) is stopped before
the first of them. The unit tests run first, before any cluster starts (some count the processes and
CPU time of the test process's children).

Under pytest-xdist (``pytest -n 2``, as .ci/run runs it: one process alone keeps two cores busy only
about half the time, waiting on processes, engines and servers to start) each worker is a session of
its own, with its own cluster and engines, and runs whole groups (``tests.conftest.xdist_group``: a
module, or all the modules using one shared engine) in the order above, so both rules hold on each
worker.
"""

from __future__ import annotations

import os

import pytest

from ..conftest import xdist_group
from .helpers import builtin_config, tiny_config

SHARED_MAX_MODEL_LEN = 512  # every module's prompt + completion lengths fit the shared tiny engines


_SHARED: list = []  # the session's shared Workers, released when the shared cluster stops


# Under pytest-xdist (``-n N``) a group (tests/conftest.py: ``xdist_group``) runs
# whole on one worker, and each worker has its own cluster and shared engines. Groups are handed out in
# collection order, each to the first worker that is nearly done with its last, so the longest start first
# (their seconds alone, measured on two cores: tiny 182, builtin_vllm 161, real model 108, the shared and
# the separate sweeps 100 each, serve 75, learner DP 73, eval CLI 70, PBT 53, vLLM transfer 50-58, train CLI
# 46) and the workers end together. The install's resolution is started before them (tests/conftest.py)
# and only collected.
LONGEST_FIRST = ("tiny", "builtin_vllm", "test_real_model", "test_tune_shared", "test_tune", "test_serve",
                 "test_learner_dp", "test_eval_cli", "test_tune_pbt", "test_vllm_transfer", "test_train_cli")


def pytest_collection_modifyitems(config, items):
    """Unit tests first (no cluster), then the modules that share the cluster (longest first), then those
    with their own: a worker that has stopped its shared cluster gets no module that needs it."""
    def order(item) -> tuple[int, int]:
        if "integration" not in item.nodeid.split("::")[0].split("/"):
            return 0, 0
        if item.get_closest_marker("own_cluster") is not None:
            return 2, 0
        name = xdist_group(item.nodeid.split("::")[0]).rsplit("/", 1)[-1].removesuffix(".py")
        return 1, LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=order)


def pytest_collection_finish(session):
    """The GPU install's resolution waits on PyPI for a minute: start it now, collect it in its test. Under
    xdist every worker collects every test, so there the module starts it itself when it runs."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any(getattr(item, "module", None) is not None and item.module.__name__.endswith("test_install_resolution")
           for item in session.items):
        from .test_install_resolution import start_resolution

        start_resolution()


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _stop_shared_cluster() -> None:
    import ray

    while _SHARED:
        _SHARED.pop().shutdown()
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def own_cluster():
    """For ``own_cluster`` modules: the shared cluster is stopped; the module starts (and stops) its own."""
    _stop_shared_cluster()
    yield
    _stop_shared_cluster()


def _shared_workers(cfg):
    from grpo_ray.cluster import Workers

    workers = Workers.start(cfg, learners=False)
    _SHARED.append(workers)
    return workers


def _release(workers) -> None:
    if any(w is workers for w in _SHARED):
        _SHARED[:] = [w for w in _SHARED if w is not workers]
        workers.shutdown()


@pytest.fixture(scope="session")
def tiny_vllm(ray_cluster, tiny_model_dir, tmp_path_factory):
    workers = _shared_workers(tiny_config(tiny_model_dir, tmp_path_factory.mktemp("tiny_vllm"),
                                          f"rollout.max_model_len={SHARED_MAX_MODEL_LEN}"))
    workers.engine = "vllm"
    yield workers
    _release(workers)


@pytest.fixture(scope="session")
def tiny_hf(ray_cluster, tiny_model_dir, tmp_path_factory):
    workers = _shared_workers(tiny_config(tiny_model_dir, tmp_path_factory.mktemp("tiny_hf"),
                                          f"rollout.max_model_len={SHARED_MAX_MODEL_LEN}", engine="hf"))
    workers.engine = "hf"
    yield workers
    _release(workers)


@pytest.fixture(scope="session")
def builtin_vllm(ray_cluster, tmp_path_factory):
    # the model's whole context: the tool tests' prompts (the tools' description) fit as well
    workers = _shared_workers(builtin_config(tmp_path_factory.mktemp("builtin_vllm"), "rollout.max_model_len=512"))
    yield workers
    _release(workers)
