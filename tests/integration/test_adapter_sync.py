"""The adapter hand-off (grpo_ray/run/learner_group.py) is queued on the actors behind the update: the rollout
worker loads the new version as soon as the learner has exported it, before the driver asks.

The learner and rollout here are small stand-ins (this test is about the hand-off's ordering, not about
training or generation); the real ones are exercised by every training test.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster(ray_cluster):
    yield


@ray.remote
class StandInLearner:
    def __init__(self) -> None:
        self.updates = 0

    def train_step(self, seconds: float) -> dict:
        time.sleep(seconds)
        self.updates += 1
        return {"loss": 0.0}

    def send_weights(self, version: int, live: bool = False):
        import torch

        from grpo_ray.wire import LoraAdapter

        return LoraAdapter(version, {"m.lora_A.weight": torch.full((1, 2), float(self.updates))}, {"r": 1})


@ray.remote
class StandInRollout:
    def __init__(self) -> None:
        self.loads: list[tuple[int, float, float]] = []

    def receive_weights(self, handle, live: bool = False) -> float:
        update = ray.get(handle.ref)  # the handle's ref reaches the worker unresolved
        self.loads.append((update.version, float(update.tensors["m.lora_A.weight"][0, 0]), time.time()))
        return 0.25

    def loaded(self) -> list:
        return self.loads


def test_rollout_loads_the_updated_adapter_before_the_driver_waits() -> None:
    from grpo_ray.run.learner_group import WeightHandoff

    learner, rollouts = StandInLearner.remote(), [StandInRollout.remote(), StandInRollout.remote()]
    update = learner.train_step.remote(1.0)
    handoff = WeightHandoff([learner], rollouts, version=1)  # what the driver does right after submitting
    ray.get(update)
    deadline = time.time() + 10
    while not all(ray.get([r.loaded.remote() for r in rollouts])) and time.time() < deadline:
        time.sleep(0.05)
    loads = [ray.get(r.loaded.remote()) for r in rollouts]
    # loaded without handoff.wait(), the export ran after the update (the tensor counts one update)
    assert [[(v, value) for v, value, _ in w] for w in loads] == [[(1, 1.0)], [(1, 1.0)]]
    assert handoff.wait() == {"sync/load_seconds_max": 0.25}
    assert ray.get(handoff.handle.ref).version == 1
    assert [len(ray.get(r.loaded.remote())) for r in rollouts] == [1, 1]  # wait() did not load again


def test_publish_only_leaves_the_rollout_workers_alone() -> None:
    from grpo_ray.run.learner_group import WeightHandoff

    learner, rollout = StandInLearner.remote(), StandInRollout.remote()
    handoff = WeightHandoff([learner], [rollout], version=3, load=False)  # async: the workers are generating
    assert handoff.wait() == {}
    assert ray.get(handoff.handle.ref).version == 3
    assert ray.get(rollout.loaded.remote()) == []
