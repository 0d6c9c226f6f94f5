"""A rollout or reward actor killed with SIGKILL in the middle of a step: the driver sends the shard
again (to the restarted actor, after re-sending the adapter) and the run completes with every step
done once. (A dead learner is replaced from its snapshot: tests/integration/test_learner_recovery.py.)

The session's vLLM rollout actor on the tiny model (``tiny_vllm``; Ray restarts it after the kill); each
test starts its own learners.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import ray

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import TOY_REWARD, tiny_config

pytestmark = pytest.mark.integration

LONG = 240  # completion tokens (+256 prompt tokens within the tiny model's 512): the random model rarely stops, so generation takes a while


@pytest.fixture(scope="module")
def cluster(tiny_vllm):
    return tiny_vllm


def pid_of(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def kill_later(pid: int, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), os.kill(pid, signal.SIGKILL)), daemon=True)
    thread.start()
    return thread


def steps_logged(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_rollout_actor_killed_mid_generation(cluster, tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, tmp_path, "trainer.steps=3", f"rollout.max_completion_tokens={LONG}")
    trainer = GRPOTrainer(cfg).setup(workers=cluster)
    rollout = cluster.rollouts[0]
    before = pid_of(rollout)
    killers = []

    def on_step(step, metrics, saved):
        if step == 1:  # step 2 starts generating right after this returns
            killers.append(kill_later(before, 0.5))

    history = trainer.train(on_step=on_step)
    assert pid_of(rollout) != before  # it really died and Ray restarted it
    assert [h["step"] for h in history] == [1, 2, 3] and steps_logged(tmp_path) == [1, 2, 3]
    assert history[0]["faults/rollout_shards_resent"] == 0 and history[1]["faults/rollout_shards_resent"] == 1
    # the restarted engine got the adapter the step needed, then every later one
    assert history[1]["policy_version_lag"] == 0 and ray.get(rollout.version.remote()) == trainer.version == 3
    assert all(h["completions/mean_length"] > 0 for h in history)


def test_reward_actor_killed_mid_scoring(cluster, tiny_model_dir, tmp_path):
    slow = TOY_REWARD.replace("even_token_share", "slow_even_token_share")
    cfg = tiny_config(tiny_model_dir, tmp_path, "trainer.steps=3", f"reward.functions=[{{name: '{slow}'}}]")
    trainer = GRPOTrainer(cfg).setup(workers=cluster)
    before = pid_of(trainer.workers.rewards[0])

    def on_step(step, metrics, saved):
        if step == 1:  # step 2: ~0.3 s of generation, then a 3 s reward call
            kill_later(before, 1.5)

    history = trainer.train(on_step=on_step)
    assert pid_of(trainer.workers.rewards[0]) != before
    assert steps_logged(tmp_path) == [1, 2, 3]
    # counted in the step it happened in, and in the run's total from then on
    assert [h["faults/reward_shards_resent"] for h in history] == [0, 1, 0]
    assert [h["faults/reward_shards_resent_total"] for h in history] == [0, 1, 1]
    assert 0.0 < history[1]["reward"] < 1.0  # scored, not lost
