"""Sweep files: domains, overrides, and the check of every trial config before anything starts."""

from __future__ import annotations

import pytest
import yaml

from grpo_ray.config import ConfigError
from grpo_ray.sweep.spec import Domain, load_sweep

pytestmark = pytest.mark.unit

BASE = {"trainer": {"prompts_per_step": 8}, "rollout": {"group_size": 8}, "learner": {"micro_batch_size": 16}}


def write(tmp_path, **sweep):
    doc = {"name": "s", "train": "base.yaml", "search_space": {"learner.lr": {"loguniform": [1e-5, 1e-3]}}, **sweep}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_domains_and_their_extremes() -> None:
    assert Domain.model_validate({"loguniform": [1e-5, 1e-3]}).extremes() == [1e-5, 1e-3]
    assert Domain.model_validate({"randint": [2, 5]}).extremes() == [2, 4]  # upper is exclusive
    assert Domain.model_validate({"choice": [4, 8, 16]}).extremes() == [4, 8, 16]
    for bad in ({"loguniform": [0, 1]}, {"uniform": [1, 1]}, {"choice": []}, {"randint": [1.5, 3]}, {"normal": [0, 1]}):
        with pytest.raises(ValueError):
            Domain.model_validate(bad)


def test_base_path_is_relative_to_the_sweep_file_and_set_applies(tmp_path) -> None:
    plan = load_sweep(write(tmp_path, set={"trainer.steps": 7}))
    assert plan.base.trainer.steps == 7 and plan.base.rollout.group_size == 8
    cfg = plan.trial_config({"learner.lr": 3e-4}, tmp_path / "t")
    assert cfg.learner.lr == 3e-4 and cfg.trainer.output_dir == str(tmp_path / "t") and cfg.trainer.steps == 7


def test_cli_overrides_route_to_train_keys_sweep_keys_and_search_space(tmp_path) -> None:
    plan = load_sweep(write(tmp_path), ["trainer.steps=3", "num_samples=9", "search_space.algo.beta={choice: [0.0, 0.1]}"])
    assert plan.base.trainer.steps == 3 and plan.spec.num_samples == 9
    assert plan.spec.search_space["algo.beta"].values == [0.0, 0.1]


def test_a_space_that_can_produce_an_invalid_trial_fails_with_one_line(tmp_path) -> None:
    # G=3 gives 24 completions a step, not a multiple of the micro batch of 16
    path = write(tmp_path, search_space={"rollout.group_size": {"choice": [4, 8, 3]}, "algo.beta": {"choice": [0.0]}})
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    message = str(err.value)
    assert "\n" not in message and "rollout.group_size=3" in message and "micro" in message


def test_range_bounds_are_checked_too(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"algo.epsilon=1.0"):  # the upper bound breaks epsilon < 1
        load_sweep(write(tmp_path, search_space={"algo.epsilon": {"uniform": [0.1, 1.0]}}))


@pytest.mark.parametrize("sweep, expected", [
    ({"search_space": {"lr": {"choice": [1]}}}, "not a train-config key"),
    ({"search_space": {}}, "search_space is empty"),
    ({"search": {"algorithm": "grid"}}, "grid search needs choice/grid lists"),
    ({"scheduler": {"name": "pbt"}, "search_space": {"algo.beta": {"grid": [0.0, 0.1]}}}, "PBT mutates values"),
    ({"metric": "eval/nope"}, "no such held-out metric"),
    ({"metric": "eval/hard_correctness", "set": {"eval.enabled": False}}, "held-out evaluation is off"),
])
def test_sweep_level_mistakes(tmp_path, sweep, expected) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_sweep(write(tmp_path, **sweep))


def test_shipped_sweeps_are_valid() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "tune_configs"
    files = sorted(root.glob("*.yaml"))
    assert {f.name for f in files} >= {"cpu_tiny.yaml", "lr_beta_group.yaml"}
    for f in files:
        plan = load_sweep(f)
        assert {"learner.lr", "algo.beta", "rollout.group_size"} <= set(plan.spec.search_space)


def test_a_sweep_of_a_run_with_tools_checks_every_trials_tools(tmp_path) -> None:
    from grpo_ray.rollout.kinds import kind_spec

    tools = {"rollout.kind": "multi_turn", "rollout.tools": ["calculator"]}
    plan = load_sweep(write(tmp_path, set=tools, search_space={"rollout.max_turns": {"choice": [2, 4]}}))
    assert plan.check_every_trial() > 0
    spec = kind_spec(plan.trial_config({"rollout.max_turns": 2}, tmp_path / "t"))
    assert spec.name == "multi_turn" and spec.options["max_turns"] == 2 and spec.options["tools"] == ["calculator"]
    with pytest.raises(ValueError, match="unknown tool 'calc'"):
        load_sweep(write(tmp_path, set={**tools, "rollout.tools": ["calc"]}))


def test_a_shared_base_sweep_takes_per_trial_keys_and_refuses_the_base_models(tmp_path) -> None:
    space = {"learner.lr": {"loguniform": [1e-5, 1e-3]}, "algo.beta": {"choice": [0.0, 0.04]},
             "rollout.group_size": {"choice": [4, 8]}, "reward.functions": {"choice": [[{"name": "correctness"}]]}}
    plan = load_sweep(write(tmp_path, share_base=True, search_space=space))
    assert plan.spec.share_base
    for key, values in [("model.lora.r", [8, 16]), ("rollout.max_model_len", [256, 512]),
                        ("algo.num_iterations", [1, 2]), ("learner.lr_scheduler", ["constant", "cosine"]),
                        ("trainer.seed", [0, 1])]:
        with pytest.raises(ConfigError) as err:
            load_sweep(write(tmp_path, share_base=True, search_space={key: {"choice": values}}))
        assert "\n" not in str(err.value) and f"share_base: {key} cannot differ" in str(err.value)
    # the same keys are fine when every trial has its own actors
    assert not load_sweep(write(tmp_path, search_space={"model.lora.r": {"choice": [8, 16]}})).spec.share_base


@pytest.mark.parametrize("fixed, words", [
    ({"model.lora.enabled": False}, "model.lora.enabled=true"),
    ({"learner.num_learners": 2}, "learner.num_learners=2"),
    ({"sync.strategy": "full"}, "sync.strategy=full"),
    ({"trainer.colocate": True}, "trainer.colocate=true; one trial's update runs while others generate"),
    ({"trainer.async_rollout": True, "rollout.inflight_weight_updates": True}, "rollout.inflight_weight_updates=true"),
])
def test_a_shared_base_needs_lora_one_learner_and_adapter_syncs(tmp_path, fixed, words) -> None:
    with pytest.raises(ConfigError, match=words):
        load_sweep(write(tmp_path, share_base=True, set=fixed))
