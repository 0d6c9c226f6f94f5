"""Placement arithmetic of grpo_ray.cluster that needs no running Ray cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpo_ray.cluster import async_core_contention, required_cpus
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
