"""Config: loading, overrides, unknown keys, cross-field rules and the one-line error messages."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from grpo_ray.config import ConfigError, GRPOConfig, apply_overrides, describe_fields, load_config

pytestmark = pytest.mark.unit

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def error_of(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(None, list(overrides))
    return str(info.value)


def test_defaults_validate():
    cfg = load_config()
    assert cfg.rollout.group_size == 8 and cfg.algo.loss_type == "dapo"
    assert cfg.rollout_batch_size == cfg.trainer.prompts_per_step * cfg.rollout.group_size


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_validates(path):
    assert isinstance(load_config(path), GRPOConfig)


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"tiny_cpu.yaml", "gsm8k_llama3_8b.yaml", "medical_qwen2.5.yaml"} <= names


def test_overrides_are_parsed_as_yaml_values():
    cfg = load_config(EXAMPLES[0], ["algo.beta=0.5", "trainer.sinks=[console]", "data.limit=12", "algo.epsilon_high=0.3"])
    assert cfg.algo.beta == 0.5 and cfg.trainer.sinks == ["console"] and cfg.data.limit == 12
    assert cfg.algo.resolved_epsilon_high == 0.3


def test_apply_overrides_does_not_touch_input():
    raw = {"algo": {"beta": 0.1}}
    out = apply_overrides(raw, ["algo.beta=0.2", "learner.lr=1e-4"])
    assert raw == {"algo": {"beta": 0.1}}
    assert out == {"algo": {"beta": 0.2}, "learner": {"lr": 1e-4}}


def test_override_without_equals_is_one_line():
    msg = error_of("algo.beta")
    assert "algo.beta" in msg and "key=value" in msg and "\n" not in msg


def test_unknown_key_suggests_the_close_one():
    msg = error_of("algo.bta=0.1")
    assert msg == "unknown config key 'algo.bta': did you mean 'algo.beta'?"


def test_unknown_section_lists_known_keys_when_nothing_is_close():
    msg = error_of("zzzz.q=1")
    assert "unknown config key 'zzzz'" in msg and "rollout" in msg and "\n" not in msg


def test_wrong_literal_names_the_field_and_choices():
    msg = error_of("algo.loss_type=ppo")
    assert msg.startswith("algo.loss_type='ppo'") and "dapo" in msg and "dr_grpo" in msg


def test_group_size_below_two_says_the_fix():
    msg = error_of("rollout.group_size=1")
    assert "rollout.group_size=1" in msg and "at least 2" in msg and "\n" not in msg


def test_micro_batch_must_divide_the_per_learner_batch():
    # 8 prompts * 4 = 32 completions per step, 2 learners -> 16 each; 5 does not divide 16.
    msg = error_of("trainer.prompts_per_step=8", "rollout.group_size=4", "learner.num_learners=2", "learner.micro_batch_size=5")
    assert "learner.micro_batch_size=5" in msg and "16" in msg


def test_learners_must_divide_the_step():
    msg = error_of("trainer.prompts_per_step=3", "rollout.group_size=3", "learner.num_learners=2", "learner.micro_batch_size=1")
    assert "learner.num_learners=2" in msg and "9 completions" in msg


def test_epsilon_high_below_epsilon():
    msg = error_of("algo.epsilon=0.2", "algo.epsilon_high=0.1")
    assert msg == "algo.epsilon_high=0.1: must be >= algo.epsilon (0.2); raise it or leave it unset"


def test_unknown_reward_is_named_with_its_index():
    msg = error_of("reward.functions=[{name: correctnes}]")
    assert msg.startswith("reward.functions[0].name='correctnes'") and "correctness" in msg


def test_reward_from_a_missing_file_is_reported(tmp_path):
    msg = error_of(f"reward.functions=[{{name: '{tmp_path}/nope.py:fn'}}]")
    assert "nope.py" in msg and "\n" not in msg


def test_several_problems_each_get_a_line():
    msg = error_of("algo.bta=1", "rollout.temperature=0")
    lines = msg.splitlines()
    assert len(lines) == 2 and any("algo.bta" in x for x in lines) and any("rollout.temperature" in x for x in lines)


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(pydantic.ValidationError):
        cfg.algo.beta = 1.0  # type: ignore[misc]


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(EXAMPLES[0], ["algo.beta=0.01"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_bad_yaml_and_missing_file_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo: [beta: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "bad.yaml" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)


def test_every_leaf_field_has_a_description():
    rows = describe_fields()
    missing = [key for key, _, desc in rows if not desc]
    assert not missing, f"fields without a description: {missing}"
    assert any(key == "algo.beta" for key, _, _ in rows)


def test_a_relative_output_dir_is_stored_absolute(tmp_path, monkeypatch) -> None:
    """Learners on other nodes write their checkpoint shards there: a relative path would be theirs."""
    monkeypatch.chdir(tmp_path)
    from grpo_ray.config import load_config as load

    cfg = load(None, ["trainer.output_dir=outputs/run"])
    assert cfg.trainer.output_dir == str(tmp_path / "outputs" / "run")
    assert load(None, ["trainer.output_dir=~/runs/a"]).trainer.output_dir.startswith("/")


def test_rules_for_combinations_that_cannot_work() -> None:
    from grpo_ray.config import ConfigError
    from grpo_ray.config import load_config as load

    with pytest.raises(ConfigError, match=r"^model.load_in_4bit=true: 4-bit weights cannot be trained"):
        load(None, ["model.load_in_4bit=true", "model.lora.enabled=false"])
    with pytest.raises(ConfigError, match=r"^model.load_in_4bit=true: NF4 weights cannot be sharded by ZeRO-3"):
        load(None, ["model.load_in_4bit=true", "learner.zero_stage=3"])
    with pytest.raises(ConfigError, match=r"^rollout.lora_apply=lora: a fully fine-tuned policy has no adapter"):
        load(None, ["model.lora.enabled=false", "rollout.lora_apply=lora"])
    with pytest.raises(ConfigError, match=r"^rollout.tensor_parallel_size=2: each rollout worker needs that many GPUs"):
        load(None, ["rollout.tensor_parallel_size=2", "rollout.num_gpus_per_worker=1"])
    assert load(None, ["rollout.tensor_parallel_size=2"]).rollout.num_gpus_per_worker is None  # follows the cluster


def test_a_renamed_key_names_its_new_name_and_saved_configs_are_migrated() -> None:
    from grpo_ray.config import ConfigError, config_from_dict, load_config, migrate_renamed_keys

    with pytest.raises(ConfigError, match=r"^config key 'rollout.weight_sync' was renamed: use 'rollout.lora_apply'$"):
        load_config(None, ["rollout.weight_sync=lora"])
    old = {"rollout": {"weight_sync": "lora", "group_size": 4}}
    assert config_from_dict(migrate_renamed_keys(old)).rollout.lora_apply == "lora"
    assert old == {"rollout": {"weight_sync": "lora", "group_size": 4}}  # the caller's dict is untouched


def test_tools_need_the_multi_turn_kind_and_must_resolve(tmp_path) -> None:
    from grpo_ray.config import ConfigError, load_config
    from grpo_ray.rollout.kinds import kind_spec

    with pytest.raises(ConfigError, match=r"^rollout.tools: tools need several turns; set rollout.kind=multi_turn$"):
        load_config(None, ["rollout.tools=[calculator]"])
    with pytest.raises(ConfigError, match=r"^rollout.kind=multi_turn: give the model something to call"):
        load_config(None, ["rollout.kind=multi_turn"])
    with pytest.raises(ConfigError, match=r"^rollout.tools: unknown tool 'calc'"):
        load_config(None, ["rollout.kind=multi_turn", "rollout.tools=[calc]"])
    (tmp_path / "t.py").write_text("def lookup(city):\n    return city\n")
    with pytest.raises(ConfigError, match=r"lookup.*has no docstring"):
        load_config(None, ["rollout.kind=multi_turn", f"rollout.tools=['{tmp_path}/t.py:lookup']"])
    cfg = load_config(None, ["rollout.kind=multi_turn", "rollout.tools=[calculator, python]", "rollout.max_turns=3"])
    spec = kind_spec(cfg)
    assert spec.name == "multi_turn" and spec.options["tools"] == ["calculator", "python"] and spec.options["max_turns"] == 3


def test_colocation_takes_one_engine_and_one_learner_rank_per_gpu_in_synchronous_runs() -> None:
    two = ["trainer.colocate=true", "rollout.num_workers=2", "learner.num_learners=2"]
    assert load_config(None, two).trainer.colocate
    assert error_of(*two, "trainer.async_rollout=true").startswith(
        "trainer.colocate: generation and updates take turns on the same GPUs, so they cannot overlap")
    assert error_of(*two, "rollout.tensor_parallel_size=2").startswith(
        "trainer.colocate with rollout.tensor_parallel_size=2: each GPU holds one rollout engine and one learner rank")
    assert error_of("trainer.colocate=true", "learner.num_learners=2") == (
        "trainer.colocate: each GPU holds one rollout worker and one learner rank, but rollout.num_workers=1 and "
        "learner.num_learners=2; make them equal (one per GPU)")
    assert error_of(*two, "rollout.num_gpus_per_worker=1").startswith(
        "trainer.colocate: rollout.num_gpus_per_worker must stay unset")


def test_inflight_weight_updates_need_async_vllm_generation() -> None:
    ok = ["rollout.inflight_weight_updates=true", "trainer.async_rollout=true"]
    assert load_config(None, ok).rollout.inflight_weight_updates
    assert error_of("rollout.inflight_weight_updates=true").startswith(
        "rollout.inflight_weight_updates: new weights reach generations already running only in async mode")
    assert error_of(*ok, "rollout.engine=hf").startswith("rollout.inflight_weight_updates with rollout.engine=hf:")
    assert load_config(None, [*ok, "rollout.kind=multi_turn", "rollout.tools=[calculator]"]).rollout.kind == "multi_turn"
    assert error_of(*ok, "model.lora.enabled=false", "sync.strategy=broadcast").startswith(
        "rollout.inflight_weight_updates with sync.strategy=broadcast:")


def test_fractional_learner_gpus_only_for_a_lone_learner() -> None:
    # two ranks on halves of GPUs could share a device, which NCCL refuses
    assert error_of("learner.num_gpus_per_learner=0.5", "learner.num_learners=2") == (
        "learner.num_gpus_per_learner=0.5: with 2 learners two ranks could land on one GPU, which NCCL refuses; give "
        "each learner a whole GPU (1, or leave it unset), or train with learner.num_learners=1 to share one GPU with "
        "the rollout worker")
    assert error_of("learner.num_gpus_per_learner=1.5").startswith(
        "learner.num_gpus_per_learner=1.5: a learner rank computes on one GPU; give it whole GPUs")
    # one learner sharing the only GPU with the rollout worker (bench/compare_trl.py, tests/gpu); whole GPUs
    assert load_config(None, ["learner.num_gpus_per_learner=0.5"]).learner.num_gpus_per_learner == 0.5
    assert load_config(None, ["learner.num_gpus_per_learner=1", "learner.num_learners=2"]).learner.num_learners == 2
