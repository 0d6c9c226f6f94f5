"""Starting Ray and the actors of a run, placed with one placement group per role.

Rollout bundles ask for GPUs (or CPUs here); learner bundles for GPUs, packed onto one node where
possible (``PACK``: gradients all-reduce fastest within a node); reward bundles for CPUs only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from grpo_ray.config import GRPOConfig
from grpo_ray.models.paths import resolve_model_path
from grpo_ray.rewards.scorer import resolve_specs

REWARD_WORKER_CPUS = 0.5


def required_cpus(cfg: GRPOConfig) -> float:
    r, l, w = cfg.rollout, cfg.learner, cfg.reward
    return r.num_workers * r.num_cpus_per_worker + l.num_learners * l.num_cpus_per_learner + w.num_workers * REWARD_WORKER_CPUS


def init_ray(cfg: GRPOConfig) -> None:
    """Connect to ``trainer.ray_address`` or start a local cluster big enough for the config."""
    if ray.is_initialized():
        return
    # vLLM logs every engine detail at INFO; actor output is forwarded to the user's terminal
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "WARNING"}}
    if cfg.trainer.ray_address:
        ray.init(address=cfg.trainer.ray_address, runtime_env=env)
        return
    # Logical CPUs: a laptop may host more actors than cores (they mostly wait on each other).
    cpus = max(os.cpu_count() or 1, int(required_cpus(cfg) + 0.999))
    ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=env, log_to_driver=True)


def rollout_engine_kwargs(cfg: GRPOConfig) -> dict[str, Any]:
    r, m = cfg.rollout, cfg.model
    if r.engine == "hf":
        from grpo_ray.learner.model import lora_config

        return {"dtype": m.dtype, "lora_config": lora_config(m), "trust_remote_code": m.trust_remote_code,
                "revision": m.revision}
    return {
        "dtype": m.dtype,
        "max_model_len": cfg.data.max_prompt_tokens + max(r.max_completion_tokens, cfg.eval.max_tokens or 0),
        "max_lora_rank": m.lora.r,
        "gpu_memory_utilization": r.gpu_memory_utilization,
        "tensor_parallel_size": r.tensor_parallel_size,
        "cpu_kvcache_gb": r.cpu_kvcache_gb,
        "seed": cfg.trainer.seed,
        "trust_remote_code": m.trust_remote_code,
        "revision": m.revision,
        "weight_sync": r.weight_sync,
    }


def _in_group(pg, index: int) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index)


@dataclass
class Workers:
    """Handles to every actor of a run."""

    rollouts: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    learners: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    learner_group: Any = None
    reward_group: Any = None

    @classmethod
    def start(cls, cfg: GRPOConfig, *, learners: bool = True) -> "Workers":
        from grpo_ray.actors.rollout import RolloutWorker

        w = cls()
        r = cfg.rollout
        model_path = resolve_model_path(cfg.model.name_or_path)
        rollout_pg = w._group([{"CPU": r.num_cpus_per_worker, "GPU": r.num_gpus_per_worker}] * r.num_workers, "PACK")
        kwargs = rollout_engine_kwargs(cfg)
        w.rollouts = [
            RolloutWorker.options(
                num_cpus=r.num_cpus_per_worker, num_gpus=r.num_gpus_per_worker, max_restarts=3, max_task_retries=0,
                scheduling_strategy=_in_group(rollout_pg, i),
            ).remote(r.engine, model_path, kwargs)
            for i in range(r.num_workers)
        ]
        w.start_rewards(cfg)
        if learners:
            w.start_learners(cfg)
        return w

    def start_rewards(self, cfg: GRPOConfig) -> list:
        """(Re)create the reward workers for ``cfg.reward`` (CPU only, cheap to start)."""
        from grpo_ray.actors.reward import RewardWorker

        rw = cfg.reward
        self.rewards = self._release(self.rewards, self.reward_group)
        self.reward_group = pg = self._group([{"CPU": REWARD_WORKER_CPUS}] * rw.num_workers, "SPREAD")
        # resolved here and shipped by value: a file.py reward need not exist on the worker's node
        functions = resolve_specs([f.model_dump() for f in rw.functions])
        self.rewards = [
            RewardWorker.options(
                num_cpus=REWARD_WORKER_CPUS, max_restarts=3, max_task_retries=0, scheduling_strategy=_in_group(pg, i)
            ).remote(functions, cfg.data.tag_style, rw.timeout_s)
            for i in range(rw.num_workers)
        ]
        return self.rewards

    def start_learners(self, cfg: GRPOConfig) -> list:
        """(Re)create the learner group: every rank, then one rendezvous for the process group."""
        from grpo_ray.actors.learner import LearnerWorker

        lc = cfg.learner
        self.stop_learners()
        pg = self._group([{"CPU": lc.num_cpus_per_learner, "GPU": lc.num_gpus_per_learner}] * lc.num_learners, "PACK")
        self.learner_group = pg
        config = cfg.to_dict()
        self.learners = [
            LearnerWorker.options(
                num_cpus=lc.num_cpus_per_learner, num_gpus=lc.num_gpus_per_learner, scheduling_strategy=_in_group(pg, i)
            ).remote(config, i, lc.num_learners)
            for i in range(lc.num_learners)
        ]
        addr, port = ray.get(self.learners[0].rendezvous_address.remote())
        ray.get([learner.setup.remote(addr, port) for learner in self.learners])
        return self.learners

    def stop_learners(self) -> None:
        """Kill the learner group and release its placement group (a new group can take its place)."""
        self.learners = self._release(self.learners, self.learner_group)
        self.learner_group = None

    def _release(self, actors: list, group) -> list:
        """Kill ``actors`` and remove their placement group; returns the new (empty) actor list."""
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if group is not None:
            remove_placement_group(group)
            self.groups.remove(group)
        return []

    def _group(self, bundles: list[dict[str, float]], strategy: str):
        bundles = [{k: v for k, v in b.items() if v > 0} or {"CPU": 0.01} for b in bundles]
        pg = placement_group(bundles, strategy=strategy)
        ray.get(pg.ready())
        self.groups.append(pg)
        return pg

    def shutdown(self) -> None:
        for actor in self.rollouts + self.rewards + self.learners:
            ray.kill(actor, no_restart=True)
        for pg in self.groups:
            remove_placement_group(pg)
        self.rollouts, self.rewards, self.learners, self.groups = [], [], [], []
