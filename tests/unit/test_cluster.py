"""Placement arithmetic of grpo_ray.cluster that needs no running Ray cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpo_ray.cluster import Placement, async_core_contention, required_cpus, role_bundles, trial_bundles
from grpo_ray.config import load_config

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_cpu.yaml"


def cfg(*overrides: str):
    return load_config(EXAMPLE, list(overrides))


def test_async_on_shared_cores_is_named_with_the_fix() -> None:
    # the embedded default gives rollout and learner both cores: fine when generation and update alternate
    assert async_core_contention(cfg(), cores=2) is None
    warning = async_core_contention(cfg("trainer.async_rollout=true"), cores=2)
    assert warning and "rollout.num_cpus_per_worker=1 learner.num_cpus_per_learner=1" in warning and "2 cores" in warning
    # following the advice silences it; so do more cores, GPUs, or someone else's cluster
    fixed = ["rollout.num_cpus_per_worker=1", "learner.num_cpus_per_learner=1"]
    assert async_core_contention(cfg("trainer.async_rollout=true", *fixed), cores=2) is None
    assert async_core_contention(cfg("trainer.async_rollout=true"), cores=4) is None
    gpus = ["rollout.num_gpus_per_worker=1", "learner.num_gpus_per_learner=1"]
    assert async_core_contention(cfg("trainer.async_rollout=true", *gpus), cores=2) is None
    assert async_core_contention(cfg("trainer.async_rollout=true", "trainer.ray_address=auto"), cores=2) is None


def test_required_cpus_adds_every_role() -> None:
    # rollout 2 + reward 0.5 + learner 2 in the embedded default
    assert required_cpus(cfg()) == pytest.approx(4.5)
    assert required_cpus(cfg("rollout.num_workers=2", "reward.num_workers=2")) == pytest.approx(7.0)


def test_reward_bundles_take_the_reward_worker_resources() -> None:
    bundles = role_bundles(cfg("reward.num_workers=2", "reward.num_cpus_per_worker=1.5", "reward.num_gpus_per_worker=0.25",
                               "reward.resources={node_a: 1}"), Placement(0, 0, 0.25))["reward"]
    assert bundles == [{"CPU": 1.5, "GPU": 0.25, "node_a": 1.0}] * 2
    # the default: half a CPU each, no GPU
    assert role_bundles(cfg("reward.num_workers=3"), Placement(0, 0, 0))["reward"] == [{"CPU": 0.5}] * 3


def test_an_lm_judge_reward_adds_the_judge_bundle_after_the_workers() -> None:
    judged = cfg("reward.functions=[{name: correctness}, {name: lm_judge}]", "reward.num_workers=2",
                 "reward.judge.num_cpus=2", "reward.judge.num_gpus=1")
    bundles = role_bundles(judged, Placement(0, 0, 0))
    assert bundles["reward"] == [{"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 2.0, "GPU": 1.0}]
    # a Tune trial reserves it too, inside the reward role's stretch of the trial's bundles
    trial = trial_bundles(judged, 1.0, Placement(0, 0, 0))
    start = 1 + len(bundles["rollout"])
    assert trial[start:start + 3] == bundles["reward"]
    assert required_cpus(judged) == pytest.approx(required_cpus(cfg("reward.num_workers=2")) + 2.0)
    # no judge reward, no judge
    assert len(role_bundles(cfg("reward.num_workers=2"), Placement(0, 0, 0))["reward"]) == 2

