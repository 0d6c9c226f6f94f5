"""Starting Ray and the actors of a run, placed with one placement group per role.

Rollout bundles ask for GPUs (or CPUs here); learner bundles for GPUs, packed onto one node where
possible (``PACK``: gradients all-reduce fastest within a node); reward bundles for CPUs only.

Inside a Ray Tune trial the roles do not make their own groups: the trial reserved one placement group
(:func:`trial_bundles`: the trial's driver first, then every role's bundles) before it started, and each
role takes its bundles from it. Trials therefore never wait on each other for an actor's resources.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from grpo_ray.config import GRPOConfig
from grpo_ray.models.paths import resolve_model_path
from grpo_ray.rewards.scorer import resolve_specs

REWARD_WORKER_CPUS = 0.5
ROLES = ("rollout", "reward", "learner")  # the order of their bundles in a trial's placement group
_STRATEGY = {"rollout": "PACK", "reward": "SPREAD", "learner": "PACK"}


def role_bundles(cfg: GRPOConfig) -> dict[str, list[dict[str, float]]]:
    """The resources of every actor of a run, one bundle per actor, by role."""
    r, lc, rw = cfg.rollout, cfg.learner, cfg.reward
    raw = {
        "rollout": [{"CPU": r.num_cpus_per_worker, "GPU": r.num_gpus_per_worker, **r.resources}] * r.num_workers,
        "reward": [{"CPU": REWARD_WORKER_CPUS, **rw.resources}] * rw.num_workers,
        "learner": [{"CPU": lc.num_cpus_per_learner, "GPU": lc.num_gpus_per_learner, **lc.resources}] * lc.num_learners,
    }
    # Ray rejects an empty bundle: an actor that asks for nothing still holds a sliver of CPU
    return {role: [{k: v for k, v in b.items() if v > 0} or {"CPU": 0.01} for b in bundles] for role, bundles in raw.items()}


def trial_bundles(cfg: GRPOConfig, driver_cpus: float) -> list[dict[str, float]]:
    """One Tune trial's reservation: its driver's bundle, then the bundles of every role in ROLES order."""
    by_role = role_bundles(cfg)
    return [{"CPU": driver_cpus}] + [b for role in ROLES for b in by_role[role]]


def required_cpus(cfg: GRPOConfig) -> float:
    return sum(b.get("CPU", 0.0) for bundles in role_bundles(cfg).values() for b in bundles)


def init_ray(cfg: GRPOConfig, *, min_cpus: float = 0.0) -> None:
    """Connect to ``trainer.ray_address`` or start a local cluster big enough for the config (or for
    ``min_cpus``, e.g. a sweep's concurrent trials)."""
    if ray.is_initialized():
        return
    # vLLM logs every engine detail at INFO; actor output is forwarded to the user's terminal
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "WARNING"}}
    if cfg.trainer.ray_address:
        ray.init(address=cfg.trainer.ray_address, runtime_env=env)
        return
    # Logical CPUs: a laptop may host more actors than cores (they mostly wait on each other).
    cpus = max(os.cpu_count() or 1, int(max(required_cpus(cfg), min_cpus) + 0.999))
    ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=env, log_to_driver=True)


def async_core_contention(cfg: GRPOConfig, cores: int) -> Optional[str]:
    """A warning when async generation and updates would share this machine's CPU cores (a local CPU run
    whose rollout and learner CPUs add up to more than the cores), else None."""
    r, lc = cfg.rollout, cfg.learner
    if not cfg.trainer.async_rollout or cfg.trainer.ray_address or r.num_gpus_per_worker or lc.num_gpus_per_learner:
        return None
    rollout, learner = r.num_cpus_per_worker * r.num_workers, lc.num_cpus_per_learner * lc.num_learners
    if rollout + learner <= cores:
        return None
    per_rollout = max(1, cores // 2 // r.num_workers)
    per_learner = max(1, (cores - per_rollout * r.num_workers) // lc.num_learners)
    return (f"trainer.async_rollout: the rollout workers ({rollout:g} CPUs) and learners ({learner:g} CPUs) run at "
            f"once but this machine has {cores} cores, so they compete (updates measured 4x slower on 2 cores); "
            f"set rollout.num_cpus_per_worker={per_rollout} learner.num_cpus_per_learner={per_learner}")


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


@dataclass
class Group:
    """Bundles ``indices`` of placement group ``pg``; ``owned`` when this run created the group."""

    pg: PlacementGroup
    indices: list[int]
    owned: bool

    def slot(self, i: int) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(placement_group=self.pg, placement_group_bundle_index=self.indices[i])


@dataclass
class Workers:
    """Handles to every actor of a run. ``trial_group``: a Tune trial's placement group to take the
    roles' bundles from (laid out by :func:`trial_bundles`) instead of creating groups."""

    rollouts: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    learners: list = field(default_factory=list)
    groups: dict = field(default_factory=dict)  # role -> Group
    trial_group: Optional[PlacementGroup] = None

    @classmethod
    def start(cls, cfg: GRPOConfig, *, learners: bool = True, trial_group: Optional[PlacementGroup] = None) -> "Workers":
        from grpo_ray.actors.rollout import RolloutWorker

        w = cls(trial_group=trial_group)
        r = cfg.rollout
        model_path = resolve_model_path(cfg.model.name_or_path)
        group = w._reserve("rollout", cfg)
        kwargs = rollout_engine_kwargs(cfg)
        w.rollouts = [
            RolloutWorker.options(
                num_cpus=r.num_cpus_per_worker, num_gpus=r.num_gpus_per_worker, resources=dict(r.resources),
                max_restarts=3, max_task_retries=0, scheduling_strategy=group.slot(i),
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
        self.rewards = self._release(self.rewards, "reward")
        group = self._reserve("reward", cfg)
        # resolved here and shipped by value: a file.py reward need not exist on the worker's node
        functions = resolve_specs([f.model_dump() for f in rw.functions])
        self.rewards = [
            RewardWorker.options(
                num_cpus=REWARD_WORKER_CPUS, resources=dict(rw.resources), max_restarts=3, max_task_retries=0,
                scheduling_strategy=group.slot(i),
            ).remote(functions, cfg.data.tag_style, rw.timeout_s)
            for i in range(rw.num_workers)
        ]
        return self.rewards

    def start_learners(self, cfg: GRPOConfig) -> list:
        """(Re)create the learner group: every rank, then one rendezvous for the process group."""
        from grpo_ray.actors.learner import LearnerWorker

        lc = cfg.learner
        self.stop_learners()
        group = self._reserve("learner", cfg)
        config = cfg.to_dict()
        self.learners = [
            LearnerWorker.options(
                num_cpus=lc.num_cpus_per_learner, num_gpus=lc.num_gpus_per_learner, resources=dict(lc.resources),
                scheduling_strategy=group.slot(i),
            ).remote(config, i, lc.num_learners)
            for i in range(lc.num_learners)
        ]
        addr, port = ray.get(self.learners[0].rendezvous_address.remote())
        ray.get([learner.setup.remote(addr, port) for learner in self.learners])
        return self.learners

    def stop_learners(self) -> None:
        """Kill the learner group and release its bundles (a new group can take their place)."""
        self.learners = self._release(self.learners, "learner")

    def _release(self, actors: list, role: str) -> list:
        """Kill ``actors`` and remove the role's placement group if this run made it; returns []."""
        for actor in actors:
            ray.kill(actor, no_restart=True)
        group = self.groups.pop(role, None)
        if group is not None and group.owned:
            remove_placement_group(group.pg)
        return []

    def _reserve(self, role: str, cfg: GRPOConfig) -> Group:
        bundles = role_bundles(cfg)[role]
        if self.trial_group is not None:
            offset = 1 + sum(len(role_bundles(cfg)[r]) for r in ROLES[: ROLES.index(role)])
            group = Group(self.trial_group, list(range(offset, offset + len(bundles))), owned=False)
        else:
            pg = placement_group(bundles, strategy=_STRATEGY[role])
            ray.get(pg.ready())
            group = Group(pg, list(range(len(bundles))), owned=True)
        self.groups[role] = group
        return group

    def shutdown(self) -> None:
        for actor in self.rollouts + self.rewards + self.learners:
            ray.kill(actor, no_restart=True)
        for group in self.groups.values():
            if group.owned:
                remove_placement_group(group.pg)
        self.rollouts, self.rewards, self.learners, self.groups = [], [], [], {}
