"""Every config Literal stays equal to the registry it names: algorithm variants, engines, rollout
kinds, weight-sync strategies, metric sinks and reward isolation.

config.py spells the choices as Literal types so that validating a config imports neither torch nor
an engine; this test is what keeps each pair from drifting apart.
"""

from __future__ import annotations

import typing

import pytest

from grpo_ray import algo
from grpo_ray.config import (
    ESTIMATOR_SCALES,
    AdvantageEstimator,
    AdvantageScale,
    ImportanceSamplingLevel,
    KLEstimator,
    LossType,
    MetricSink,
    PolicyObjective,
    RewardIsolation,
    RolloutEngineName,
    RolloutKindName,
    SyncStrategy,
)
from grpo_ray.metric_sinks import SINKS
from grpo_ray.rewards.scorer import ISOLATIONS
from grpo_ray.rollout.engines import ENGINES
from grpo_ray.rollout.kinds import ROLLOUT_KINDS
from grpo_ray.sync import WEIGHT_SYNCS

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "literal, registry",
    [
        (LossType, algo.LOSS_AGGREGATIONS),
        (AdvantageScale, algo.ADVANTAGE_SCALES),
        (KLEstimator, algo.KL_ESTIMATORS),
        (ImportanceSamplingLevel, algo.IMPORTANCE_SAMPLING_LEVELS),
        (AdvantageEstimator, algo.ADVANTAGE_ESTIMATORS),
        (PolicyObjective, algo.POLICY_OBJECTIVES),
        (RolloutEngineName, ENGINES),
        (RolloutKindName, ROLLOUT_KINDS),
        (MetricSink, SINKS),
    ],
    ids=["loss_type", "scale_rewards", "kl_estimator", "importance_sampling_level", "advantage_estimator",
         "policy_objective", "rollout.engine", "rollout.kind", "trainer.sinks"],
)
def test_config_choices_match_registries(literal, registry):
    assert sorted(typing.get_args(literal)) == registry.names()


def test_sync_strategies_are_auto_and_the_registry():
    assert sorted(typing.get_args(SyncStrategy)) == sorted(["auto", *WEIGHT_SYNCS.names()])


def test_token_budget_refuses_exactly_the_split_dependent_loss_types():
    from grpo_ray.config import SPLIT_DEPENDENT_LOSS_TYPES

    dependent = sorted(name for name in algo.LOSS_AGGREGATIONS if not algo.LOSS_AGGREGATIONS.get(name).split_invariant)
    assert sorted(SPLIT_DEPENDENT_LOSS_TYPES) == dependent == ["bnpo"]


def test_reward_isolation_choices_are_the_scorers():
    assert typing.get_args(RewardIsolation) == ISOLATIONS


def test_config_estimator_scales_match_the_registry():
    """The config rule on scale_rewards and compute_advantages accept the same pairs."""
    registered = {name: algo.ADVANTAGE_ESTIMATORS.get(name).scales for name in algo.ADVANTAGE_ESTIMATORS}
    assert ESTIMATOR_SCALES == registered


def test_data_config_reaches_the_loader(shared_data):
    from grpo_ray.config import load_config
    from grpo_ray.data.from_config import load_split

    cfg = load_config(None, ["data.source=gsm8k", f"data.data_dir={shared_data / 'gsm8k'}", "data.tag_style=thinking"])
    rows = load_split(cfg.data, "test", limit=5)
    assert len(rows) == 5
    assert "<thinking>" in rows[0]["prompt"][0]["content"] and rows[0]["answer"].lstrip("-").isdigit()
