"""A learner SIGKILLed mid-update is replaced and the run goes on, every step done once.

The group starts again from the snapshot every rank keeps of the last completed step (its state lives
in the object store, owned by the driver); the interrupted step is sent again, and on CPU with a fixed
seed the run ends with exactly the weights and per-step rewards of an uninterrupted run. When the
snapshot is gone too, the run goes back to its last checkpoint and logs every step once.

The session's transformers rollout actor on the tiny model (``tiny_hf``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import ray
import torch

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import tiny_config

pytestmark = pytest.mark.integration

STEPS = 4


@pytest.fixture(scope="module")
def cluster(tiny_hf):
    return tiny_hf


def config(tiny_model_dir, out, *overrides):
    return tiny_config(tiny_model_dir, out, f"trainer.steps={STEPS}", "trainer.save_every=2", *overrides, engine="hf")


def final_weights(trainer) -> dict[str, torch.Tensor]:
    update = ray.get(trainer.workers.learners[0].send_weights.remote(trainer.version))
    return dict(update.tensors)


def steps_logged(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@ray.remote
class _Owner:
    def put(self, n):
        return [ray.put(b"x") for _ in range(n)]


def lost_objects(n: int) -> list:
    """Refs whose owner is dead: reading them raises OwnerDiedError, as a lost node's objects do."""
    owner = _Owner.remote()
    refs = ray.get(owner.put.remote(n))
    ray.kill(owner, no_restart=True)
    time.sleep(1.0)
    return refs


def run(cluster, cfg, *, kill_in_step=None, rank=0, lose_snapshot=False):
    """Train ``cfg``; with ``kill_in_step``, SIGKILL learner ``rank`` while that step's update runs."""
    trainer = GRPOTrainer(cfg).setup(workers=cluster)
    group = trainer.learners
    original = group._submit_update

    def submit_update(rollouts, batch):
        if kill_in_step is not None and trainer.step + 1 == kill_in_step and not trainer.faults.total["learner"]:
            pid = ray.get(trainer.workers.learners[rank].__ray_call__.remote(lambda self: os.getpid()))
            if lose_snapshot:  # the snapshot's objects become unreadable, as when their node is lost
                group.snapshots._files = lost_objects(len(group.snapshots._files))
            threading.Thread(target=lambda: (time.sleep(0.05), os.kill(pid, signal.SIGKILL)), daemon=True).start()
        return original(rollouts, batch)

    group._submit_update = submit_update
    try:
        history = trainer.train()
        return history, final_weights(trainer), trainer
    finally:
        trainer.workers.stop_learners()


@pytest.fixture(scope="module")
def uninterrupted(cluster, tiny_model_dir, tmp_path_factory):
    out = {}

    def get(*overrides):
        if overrides not in out:
            history, weights, _ = run(cluster, config(tiny_model_dir, tmp_path_factory.mktemp("clean"), *overrides))
            out[overrides] = (history, weights)
        return out[overrides]

    return get


def assert_same_run(history, weights, reference) -> None:
    ref_history, ref_weights = reference
    assert [h["reward"] for h in history] == [h["reward"] for h in ref_history]
    assert weights.keys() == ref_weights.keys()
    for k in weights:
        torch.testing.assert_close(weights[k], ref_weights[k], rtol=0, atol=1e-6, msg=k)


LEARNERS = ("learner.num_learners=2", "learner.zero_stage=2", "learner.micro_batch_size=8")  # two ZeRO-2 ranks


def test_killed_learner_is_replaced_and_the_run_equals_an_uninterrupted_one(cluster, tiny_model_dir, tmp_path,
                                                                           uninterrupted):
    """Rank 1 of two (ZeRO-2) is killed in step 3's update: both ranks are replaced from their snapshots."""
    history, weights, trainer = run(cluster, config(tiny_model_dir, tmp_path, *LEARNERS), kill_in_step=3, rank=1)
    assert steps_logged(tmp_path) == list(range(1, STEPS + 1))
    assert [h["faults/learner_shards_resent"] for h in history] == [0, 0, 1, 0]
    assert history[-1]["faults/learner_shards_resent_total"] == 1
    assert "timing/learner_recovery" in history[2] and history[1]["learner/snapshot_bytes"] > 0
    assert_same_run(history, weights, uninterrupted(*LEARNERS))


def test_without_its_snapshot_the_run_goes_back_to_the_last_checkpoint(cluster, tiny_model_dir, tmp_path, uninterrupted):
    """Rank 0 is killed in step 3's update and the snapshots are unreadable (as when their node is lost)."""
    history, weights, trainer = run(cluster, config(tiny_model_dir, tmp_path, *LEARNERS), kill_in_step=3,
                                    lose_snapshot=True)
    assert steps_logged(tmp_path) == list(range(1, STEPS + 1))  # steps 3.. were redone from step 2's checkpoint, logged once
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert_same_run(history, weights, uninterrupted(*LEARNERS))
