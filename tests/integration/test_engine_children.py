"""A killed rollout actor's engine processes die with it, so its restart finds its GPU free.

On GPUs vLLM runs its engine core and tensor-parallel workers as child processes of the rollout actor;
SIGKILLed, the actor leaves them holding GPU memory (vLLM issue 55510). This CPU test uses stand-in
children (plain ``sleep`` processes: the mechanism is what is tested, not vLLM), started inside a real
RolloutWorker on the cluster grpo_ray itself starts (``init_ray``):

1. a child in the actor's process group dies with it (Ray's per-worker process-group cleanup, which
   ``init_ray`` turns on);
2. a child that left the group (``setsid``) survives that, and the restarted actor kills it before it
   starts its own engine, from the list its previous incarnation recorded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def worker(ray_cluster, tmp_path_factory):
    from grpo_ray.actors.rollout_worker import RolloutWorker
    from grpo_ray.cluster import init_ray
    from grpo_ray.config import load_config
    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rollout.engines.base import engine_spec

    cfg = load_config(None, ["rollout.engine=hf", f"trainer.output_dir={tmp_path_factory.mktemp('out')}"])
    init_ray(cfg)
    w = RolloutWorker.options(num_cpus=1, max_restarts=2).remote(engine_spec(cfg, resolve_model_path(cfg.model.name_or_path)))
    ray.get(w.start.remote())
    yield w
    ray.kill(w, no_restart=True)


def _spawn(worker, detach: bool, record: bool) -> int:
    def spawn(actor):
        child = subprocess.Popen(["sleep", "600"], start_new_session=detach)
        if record:
            actor.children.record()
        return child.pid

    return ray.get(worker.__ray_call__.remote(spawn))


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_and_wait_for_restart(worker) -> dict:
    from grpo_ray.run.shards import wait_until_alive

    pid = ray.get(worker.__ray_call__.remote(lambda actor: os.getpid()))
    os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)
    assert wait_until_alive(worker, 60)
    return ray.get(worker.launch_plan.remote())


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.2)
    return False


def test_a_child_in_the_actors_process_group_dies_with_it(worker) -> None:
    child = _spawn(worker, detach=False, record=False)
    _kill_and_wait_for_restart(worker)
    assert _gone_within(child, 15)


def test_a_detached_child_is_killed_by_the_restarted_actor(worker) -> None:
    child = _spawn(worker, detach=True, record=True)
    # started after the record was written, so not in it: only Ray could clean it up, and cannot
    stray = _spawn(worker, detach=True, record=False)
    try:
        plan = _kill_and_wait_for_restart(worker)
        assert child in plan["reaped"] and _gone_within(child, 5)
        assert _running(stray), "a detached child outlives the actor unless the actor reaps it"
    finally:
        for pid in (stray, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
