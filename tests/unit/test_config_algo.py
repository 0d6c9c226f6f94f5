"""Config rules for the algorithm switches: advantage estimator vs scale_rewards, and the options of each
policy objective. Each broken combination is one line naming the field, the value and the fix."""

from __future__ import annotations

import pytest

from grpo_ray.config import ConfigError, load_config

pytestmark = pytest.mark.unit


def error_of(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(None, list(overrides))
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_defaults_are_todays_algorithm():
    a = load_config().algo
    assert (a.advantage_estimator, a.scale_rewards, a.policy_objective, a.delta) == ("grpo", "group", "clip", None)
    assert (a.cispo_max_ratio, a.sapo_temperature_pos, a.sapo_temperature_neg) == (5.0, 1.0, 1.05)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_takes_every_scale(scale):
    assert load_config(None, [f"algo.scale_rewards={scale}"]).algo.scale_rewards == scale


@pytest.mark.parametrize("estimator", ["rloo", "reinforce_pp_baseline"])
def test_self_scaling_estimators_take_scale_none(estimator):
    cfg = load_config(None, [f"algo.advantage_estimator={estimator}", "algo.scale_rewards=none"])
    assert cfg.algo.advantage_estimator == estimator


@pytest.mark.parametrize("estimator", ["rloo", "reinforce_pp_baseline"])
@pytest.mark.parametrize("scale", ["group", "batch"])
def test_std_scale_with_a_self_scaling_estimator_is_rejected(estimator, scale):
    msg = error_of(f"algo.advantage_estimator={estimator}", f"algo.scale_rewards={scale}")
    assert msg == (
        f"algo.scale_rewards='{scale}': advantage_estimator='{estimator}' scales its own advantages, so a std "
        "scale on top would only change the step size; set algo.scale_rewards=none"
    )


def test_unknown_estimator_and_objective_list_the_choices():
    assert "rloo" in error_of("algo.advantage_estimator=ppo") and "reinforce_pp_baseline" in error_of("algo.advantage_estimator=ppo")
    msg = error_of("algo.policy_objective=ppo")
    assert msg.startswith("algo.policy_objective='ppo'") and "cispo" in msg and "sapo" in msg


def test_delta_above_the_clip_range_is_accepted():
    cfg = load_config(None, ["algo.delta=4", "algo.epsilon_high=0.28"])
    assert cfg.algo.delta == 4.0


def test_delta_inside_the_clip_range_is_rejected():
    msg = error_of("algo.delta=1.2", "algo.epsilon_high=0.28")
    assert msg == (
        "algo.delta=1.2: below 1 + epsilon_high (1.28) it would also clip positive-advantage tokens inside the "
        "clip range; raise it above 1.28 or unset it"
    )


def test_delta_at_most_one_is_a_field_error():
    assert error_of("algo.delta=1").startswith("algo.delta=1: Input should be greater than 1")


@pytest.mark.parametrize("objective", ["cispo", "sapo"])
def test_delta_needs_the_clip_objective(objective):
    msg = error_of(f"algo.policy_objective={objective}", "algo.delta=4")
    assert msg == (
        f"algo.delta=4.0: two-sided clipping caps the clip objective's ratio, and policy_objective='{objective}' "
        "has none; unset algo.delta or use policy_objective=clip"
    )


def test_epsilon_high_under_cispo_points_to_cispo_max_ratio():
    """A TRL user's loss_type=cispo, epsilon_high=5.0 would silently do nothing here: say where the cap is."""
    msg = error_of("algo.policy_objective=cispo", "algo.epsilon_high=5.0")
    assert msg == (
        "algo.epsilon_high=5.0: policy_objective='cispo' has no clip range; its weight cap is algo.cispo_max_ratio "
        "(TRL's epsilon_high under loss_type=cispo); unset algo.epsilon_high"
    )
    assert load_config(None, ["algo.policy_objective=cispo", "algo.cispo_max_ratio=5.0"]).algo.cispo_max_ratio == 5.0


def test_epsilon_high_under_sapo_points_to_its_temperatures():
    msg = error_of("algo.policy_objective=sapo", "algo.epsilon_high=0.28")
    assert "has no clip range; its gate is set by algo.sapo_temperature_pos and algo.sapo_temperature_neg" in msg


@pytest.mark.parametrize(
    "override, start",
    [
        ("algo.cispo_max_ratio=0.5", "algo.cispo_max_ratio=0.5: Input should be greater than or equal to 1"),
        ("algo.sapo_temperature_pos=0", "algo.sapo_temperature_pos=0: Input should be greater than 0"),
        ("algo.sapo_temperature_neg=-1", "algo.sapo_temperature_neg=-1: Input should be greater than 0"),
    ],
)
def test_objective_option_bounds(override, start):
    assert error_of(override).startswith(start)
