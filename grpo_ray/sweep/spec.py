"""A sweep file: the base train config, a search space over dotted config keys, and how to search it.

Validated before Ray starts, like a train config. Beyond each field's own rules, every trial config
the search space can produce is checked: the product of each dimension's extreme points (both bounds
of a range, every listed value) is applied to the base config and validated, so a space that can
yield, say, a group size that does not divide the micro batch fails at once with one line naming the
combination. This module imports no Ray.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grpo_ray.config import (
    ConfigError, GRPOConfig, _describe_error, apply_overrides, config_from_dict, parse_override, read_yaml, with_values,
)

DomainKind = Literal["loguniform", "uniform", "randint", "choice", "grid"]
TRAIN_SECTIONS = tuple(GRPOConfig.model_fields)  # model, data, rollout, ...
MAX_CHECKED_COMBINATIONS = 4096
# What may differ between the trials of a shared-base sweep (share_base: true): what a trial's driver,
# its reward workers and its slot on the shared learner hold (a whole section where it ends with a dot).
# The rest (the model and its adapter's shape, the engines' lengths and seeds, the schedule's shape,
# the actor counts) is built once for all of them.
SHARED_PER_TRIAL = (
    "algo.", "reward.", "eval.", "learner.lr", "learner.weight_decay", "learner.adam_betas", "learner.micro_batch_size",
    "learner.max_tokens_per_micro_batch", "learner.logprob_chunk_size", "learner.share_prompt_prefix",
    "rollout.group_size", "rollout.temperature", "rollout.top_p", "rollout.top_k", "trainer.prompts_per_step",
    "trainer.save_every", "trainer.log_completions_every", "data.limit", "data.system_prompt",
    "data.assistant_prefix", "data.demonstrations",
)
SHARED_FIXED = ("algo.num_iterations",)  # within a per-trial section, but sets the schedule's length


def varies_per_trial(key: str) -> bool:
    """Whether a shared-base sweep lets trials differ in ``key`` (see :data:`SHARED_PER_TRIAL`)."""
    if key in SHARED_FIXED:
        return False
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in SHARED_PER_TRIAL)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Domain(_Section):
    """One dimension. Written in YAML as ``{loguniform: [1e-5, 1e-3]}`` or ``{choice: [4, 8]}``."""

    kind: DomainKind
    values: list[Any]

    @model_validator(mode="before")
    @classmethod
    def _from_short_form(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) not in ("kind", "values"):
            kind, values = next(iter(raw.items()))
            return {"kind": kind, "values": values}
        return raw

    @model_validator(mode="after")
    def _check(self) -> "Domain":
        v = self.values
        if self.kind in ("choice", "grid"):
            if not v:
                raise ValueError(f"{self.kind} needs at least one value")
            return self
        if len(v) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ValueError(f"{self.kind} takes [lower, upper], two numbers; got {v!r}")
        lo, hi = v
        if not lo < hi:
            raise ValueError(f"{self.kind} [{lo}, {hi}]: lower must be below upper")
        if self.kind == "loguniform" and lo <= 0:
            raise ValueError(f"loguniform [{lo}, {hi}]: both bounds must be > 0 (use uniform or choice to include 0)")
        if self.kind == "randint" and not all(isinstance(x, int) for x in v):
            raise ValueError(f"randint [{lo}, {hi}]: bounds must be integers (upper is exclusive)")
        return self

    def extremes(self) -> list[Any]:
        """The values that bound what this dimension can produce."""
        if self.kind in ("choice", "grid"):
            return list(self.values)
        lo, hi = self.values
        return [lo, hi - 1] if self.kind == "randint" else [lo, hi]


class SchedulerSpec(_Section):
    name: Literal["asha", "pbt", "fifo"] = Field("asha", description="ASHA stops poor trials early; PBT copies good ones.")
    grace_period: int = Field(5, ge=1, description="ASHA: steps every trial runs before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: keep 1/reduction_factor of the trials at each rung.")
    perturbation_interval: int = Field(5, ge=1, description="PBT: steps between exploit/explore decisions (and checkpoints).")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="PBT: bottom fraction that copies the top fraction.")
    resample_probability: float = Field(0.25, ge=0, le=1, description="PBT: chance a copied value is resampled, not perturbed.")


class SearchSpec(_Section):
    algorithm: Literal["random", "grid", "optuna"] = Field("random", description="How trial configs are drawn.")
    seed: Optional[int] = Field(0, description="Seed of the search algorithm (null: unseeded).")


class ResourcesSpec(_Section):
    driver_cpus: float = Field(1.0, gt=0, description="CPUs for a trial's driver; its actors' bundles come from the train config.")


class SweepConfig(_Section):
    name: str = Field(description="The sweep's name: its folder under output_dir.")
    train: Union[str, dict[str, Any]] = Field(description="The base train config: a YAML path (relative to the sweep file) or a mapping.")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted train-config keys fixed for every trial.")
    search_space: dict[str, Domain] = Field(description="Dotted train-config key -> domain.")
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    num_samples: int = Field(4, ge=1, description="Trials to draw (with grid values: repeats of the grid).")
    max_concurrent_trials: int = Field(1, ge=1, description="Trials running at once.")
    metric: str = Field("reward", description="Reported metric to optimise, e.g. reward or eval/hard_correctness.")
    mode: Literal["max", "min"] = Field("max")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    output_dir: str = Field("outputs/sweeps", description="Sweeps are written to output_dir/name.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints Tune keeps per trial (under PBT: all of them).")
    share_base: bool = Field(False, description="Every trial trains its LoRA adapter on one set of rollout workers and "
                             "one learner holding the base model once (grpo_ray.sweep.shared); trials then run together.")

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        if not self.search_space:
            raise ValueError("search_space is empty: name at least one dotted train-config key, e.g. learner.lr")
        for key in [*self.search_space, *self.set]:
            if key.split(".")[0] not in TRAIN_SECTIONS:
                raise ValueError(f"{key!r} is not a train-config key: it must start with one of {', '.join(TRAIN_SECTIONS)}")
        ranges = [k for k, d in self.search_space.items() if d.kind not in ("choice", "grid")]
        if self.search.algorithm == "grid" and ranges:
            raise ValueError(f"search.algorithm=grid: {ranges[0]} is a {self.search_space[ranges[0]].kind} range; "
                             "grid search needs choice/grid lists, or use search.algorithm=random")
        grids = [k for k, d in self.search_space.items() if d.kind == "grid"]
        if grids and self.search.algorithm == "optuna":
            raise ValueError(f"search.algorithm=optuna: {grids[0]} is a grid; Optuna samples, use choice")
        if grids and self.scheduler.name == "pbt":
            raise ValueError(f"scheduler.name=pbt: {grids[0]} is a grid; PBT mutates values, use choice")
        fixed = [k for k in self.search_space if not varies_per_trial(k)]
        if self.share_base and fixed:
            raise ValueError(f"share_base: {fixed[0]} cannot differ between trials that share one base model's actors; "
                             "sweep it with share_base: false, or fix it in set")
        return self


class SweepPlan:
    """A validated sweep: the spec, the resolved base train config (as a raw mapping) and where it writes."""

    def __init__(self, spec: SweepConfig, base_raw: dict[str, Any], sweep_file: Optional[Path]) -> None:
        self.spec, self.base_raw, self.sweep_file = spec, base_raw, sweep_file
        self.base = config_from_dict(base_raw)  # the base itself must be valid
        if spec.share_base:
            _check_shared_base(self.base)

    @property
    def sweep_dir(self) -> Path:
        return (Path(self.spec.output_dir) / self.spec.name).resolve()

    def trial_raw(self, params: dict[str, Any]) -> dict[str, Any]:
        """The raw train config of a trial with these sampled values (dotted key -> value)."""
        return with_values(self.base_raw, params)

    def trial_config(self, params: dict[str, Any], output_dir: Union[str, Path]) -> GRPOConfig:
        return config_from_dict(with_values(self.trial_raw(params), {"trainer.output_dir": str(output_dir), "trainer.resume": None}))

    def check_every_trial(self) -> int:
        """Validate each combination of the search space's extreme values; returns how many were checked."""
        keys = list(self.spec.search_space)
        axes = [self.spec.search_space[k].extremes() for k in keys]
        count = math.prod(len(a) for a in axes)
        if count > MAX_CHECKED_COMBINATIONS:
            raise ConfigError(f"search_space: {count} extreme-value combinations to check (over {MAX_CHECKED_COMBINATIONS}); "
                              "split the sweep or use ranges instead of long choice lists")
        for combo in itertools.product(*axes):
            params = dict(zip(keys, combo))
            try:
                GRPOConfig.model_validate(self.trial_raw(params))
            except ValidationError as err:
                first = _describe_error(err.errors()[0]).splitlines()[0]
                shown = ", ".join(f"{k}={v}" for k, v in params.items())
                raise ConfigError(f"search_space can produce an invalid trial ({shown}): {first}") from None
        return count


def _check_shared_base(base: GRPOConfig) -> None:
    """What a shared-base sweep needs of its base config: LoRA (trials differ in adapters), one learner
    (every trial's calls reach it in one order), adapters through the object store, and no colocation."""
    if not base.model.lora.enabled:
        raise ConfigError("share_base: the trials share the base model's weights, so they must train LoRA adapters "
                          "(model.lora.enabled=true)")
    if base.learner.num_learners != 1:
        raise ConfigError(f"share_base: learner.num_learners={base.learner.num_learners}; a shared learner is one rank "
                          "(several trials' calls would reach several ranks in different orders)")
    if base.sync_strategy != "lora":
        raise ConfigError(f"share_base: sync.strategy={base.sync.strategy}; trials hand their adapters over with "
                          "sync.strategy=lora (or auto)")
    if base.rollout.inflight_weight_updates:
        raise ConfigError("share_base: rollout.inflight_weight_updates=true; the shared engine generates for several "
                          "trials at once, and one trial's new version must not reach another's generation")
    if base.trainer.colocate:
        raise ConfigError("share_base: trainer.colocate=true; one trial's update runs while others generate on the "
                          "shared engine, which therefore cannot sleep during updates (set trainer.colocate=false)")


def load_sweep(path: Union[str, Path], overrides: Optional[list[str]] = None) -> SweepPlan:
    """Read a sweep file, apply ``key=value`` overrides (train-config keys go to ``set``, the rest to
    the sweep itself), validate the spec, the base config and every trial it can produce."""
    path = Path(path)
    raw = read_yaml(path)
    for item in overrides or []:
        keys, value = parse_override(item)
        if keys[0] in TRAIN_SECTIONS:  # learner.lr=1e-4: fixed for every trial
            raw.setdefault("set", {})[".".join(keys)] = value
        elif keys[0] in ("search_space", "set") and len(keys) > 1:  # their keys are dotted train keys
            raw.setdefault(keys[0], {})[".".join(keys[1:])] = value
        else:
            raw = apply_overrides(raw, [item])
    try:
        spec = SweepConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(_describe_error(e) for e in err.errors())) from None
    if isinstance(spec.train, str):
        base_path = Path(spec.train)
        base_path = base_path if base_path.is_absolute() else path.parent / base_path
        base_raw = read_yaml(base_path)
    else:
        base_raw = dict(spec.train)
    base_raw = with_values(base_raw, spec.set)
    try:
        plan = SweepPlan(spec, base_raw, path)
    except ConfigError as err:
        raise ConfigError(f"train config of the sweep: {str(err).splitlines()[0]}") from None
    plan.check_every_trial()
    _check_metric(plan)
    return plan


def _check_metric(plan: SweepPlan) -> None:
    from grpo_ray.evaluation.table import LABEL_METRICS, MATH_METRICS

    metric, base = plan.spec.metric, plan.base
    eval_keys = sorted({f"eval/{m.key}" for m in (*MATH_METRICS, *LABEL_METRICS)})
    if metric.startswith("eval/") and metric not in eval_keys:
        raise ConfigError(f"metric={metric!r}: no such held-out metric; one of {', '.join(eval_keys)}")
    if metric.startswith("eval/") and not base.eval.enabled:
        raise ConfigError(f"metric={metric!r}: held-out evaluation is off (eval.enabled=false); optimise 'reward' or enable eval")
    if metric.startswith("eval/") and base.eval.every == 0:
        raise ConfigError(f"metric={metric!r}: eval.every=0 evaluates only at the end, too late for a scheduler; set eval.every")
