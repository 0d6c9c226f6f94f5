"""A real 2-node Ray cluster on 127.0.0.1: a head node and a second node, each a raylet with its own
object store (Ray's multi-node test cluster, ``ray.cluster_utils.Cluster``, which stops only its own
nodes: ``ray stop`` would stop every Ray cluster on the machine, another pytest worker's included),
each node with its own custom resource. The rollout actor is placed on one node and the learner on
the other through ``rollout.resources`` / ``learner.resources``; a few steps train, so the adapter
crosses nodes through the object store at every sync.
"""

from __future__ import annotations

import pytest
import ray

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import tiny_config

pytestmark = [pytest.mark.integration, pytest.mark.own_cluster]


@pytest.fixture(scope="module")
def two_nodes(own_cluster):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "resources": {"node_rollout": 4},
                                                             "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=3, resources={"node_learner": 4})
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def node_of(actor) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def test_rollout_and_learner_on_different_nodes(two_nodes, tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, tmp_path, f"trainer.ray_address={two_nodes}", "trainer.steps=3",
                      "rollout.resources={node_rollout: 1}", "learner.resources={node_learner: 1}",
                      engine="hf")  # placement is the point: the transformers engine starts in seconds
    trainer = GRPOTrainer(cfg).setup()
    try:
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
        rollout_node, learner_node = node_of(trainer.workers.rollouts[0]), node_of(trainer.workers.learners[0])
        assert rollout_node != learner_node
        assert "node_rollout" in nodes[rollout_node] and "node_learner" in nodes[learner_node]
        history = trainer.train()
        # every sync crossed from the learner's node to the rollout's: the engine holds the last adapter
        assert [h["step"] for h in history] == [1, 2, 3] and all(h["policy_version_lag"] == 0 for h in history)
        assert ray.get(trainer.workers.rollouts[0].version.remote()) == 3
        assert all(h["sampling/logp_difference/mean"] < 0.01 for h in history)  # the same adapter on both nodes
    finally:
        trainer.shutdown()
