"""The sweep spec as Ray Tune objects: the parameter space, the scheduler and the search algorithm."""

from __future__ import annotations

from typing import Any

from ray import tune

from grpo_ray.errors import UserError
from grpo_ray.sweep.spec import Domain, SweepConfig

TIME_ATTR = "step"  # schedulers count our training steps, which survive a restore (training_iteration does not)


def tune_domain(d: Domain, *, as_grid: bool = False) -> Any:
    if d.kind == "grid" or (as_grid and d.kind == "choice"):
        return tune.grid_search(list(d.values))
    if d.kind == "choice":
        return tune.choice(list(d.values))
    lo, hi = d.values
    return {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint}[d.kind](lo, hi)


def param_space(spec: SweepConfig) -> dict[str, Any]:
    """Dotted train-config key -> Tune domain (every list is a grid under search.algorithm=grid)."""
    as_grid = spec.search.algorithm == "grid"
    return {key: tune_domain(d, as_grid=as_grid) for key, d in spec.search_space.items()}


def make_scheduler(spec: SweepConfig, max_steps: int):
    s = spec.scheduler
    if s.name == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_steps, grace_period=min(s.grace_period, max_steps),
                             reduction_factor=s.reduction_factor)
    if s.name == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        return PopulationBasedTraining(
            time_attr=TIME_ATTR, perturbation_interval=s.perturbation_interval,
            hyperparam_mutations={k: tune_domain(d) for k, d in spec.search_space.items()},
            quantile_fraction=s.quantile_fraction, resample_probability=s.resample_probability,
        )
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def make_search_alg(spec: SweepConfig) -> Any:
    """Tune's search algorithm, at most ``max_concurrent_trials`` trials at a time, seeded with
    ``search.seed`` so a sweep draws the same trials each time: for random and grid Tune's own
    variant generator (``random_state``; grid lists expand in :func:`param_space`), for optuna
    ``OptunaSearch``."""
    if spec.search.algorithm != "optuna":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=spec.max_concurrent_trials)
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError("search.algorithm=optuna: optuna is not installed (pip install optuna), "
                        "or use search.algorithm=random") from None
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    return ConcurrencyLimiter(OptunaSearch(seed=spec.search.seed), max_concurrent=spec.max_concurrent_trials)
