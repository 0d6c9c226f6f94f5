from __future__ import annotations

import functools
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from grpo_ray.rewards import REWARDS, RewardSpecError, resolve_reward, reward_name, score_completions
from grpo_ray.rewards import correctness_reward, integer_reward, strict_format_reward

pytestmark = pytest.mark.unit

BUILTIN = {
    "correctness",
    "soft_correctness",
    "integer",
    "strict_format",
    "soft_format",
    "xml_count",
    "tool_call_format",
    "tool_called",
    "text_after_answer",
    "length_penalty",
    "soft_overlong",
    "min_reasoning_length",
    "pubmedqa_correctness",
    "semantic_similarity",
    "lm_judge",
}

USER_REWARDS = textwrap.dedent(
    '''
    LIMIT = 3

    def shorter_is_better(prompts, completions, answer, **kwargs):
        return [1.0 if len(c) <= LIMIT and c == a else 0.0 for c, a in zip(completions, answer)]

    def _private():
        pass
    '''
)


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


def test_builtin_names() -> None:
    assert set(REWARDS.names()) == BUILTIN
    for name in BUILTIN:
        assert resolve_reward(name) is REWARDS.get(name)


def test_user_reward_from_file_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_rewards.py").write_text(USER_REWARDS)
    fn = resolve_reward(f"{tmp_path}/my_rewards.py:shorter_is_better")
    monkeypatch.chdir(tmp_path)
    assert resolve_reward("my_rewards.py:shorter_is_better") is fn  # relative to cwd; loaded once
    rewards = score_completions(
        [fn, integer_reward], ["q"] * 3, ["4", "4", "1234"], {"answer": ["4", "5", "1234"]}, [{}, {}]
    )
    assert rewards == [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]]


def test_same_file_name_in_two_folders_do_not_collide(tmp_path: Path) -> None:
    for folder, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "rewards.py").write_text(f"def r(prompts, completions, **kw):\n    return [{value}]\n")
    assert resolve_reward(f"{tmp_path}/a/rewards.py:r")(None, ["x"]) == [1.0]
    assert resolve_reward(f"{tmp_path}/b/rewards.py:r")(None, ["x"]) == [2.0]


def test_file_reward_pickles_by_value(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle", reason="Ray ships functions with cloudpickle")
    path = tmp_path / "shipped.py"
    path.write_text(USER_REWARDS)
    payload = cloudpickle.dumps(resolve_reward(f"{path}:shorter_is_better"))
    path.unlink()  # a worker on another node has no copy of the file
    code = (
        "import pickle, sys; f = pickle.loads(sys.stdin.buffer.read()); "
        "print(f(None, ['4', '12345'], answer=['4', '12345']))"
    )
    out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, check=True)
    assert out.stdout.decode().strip() == "[1.0, 0.0]"


def test_user_reward_from_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "grpo_ray_test_user_mod.py").write_text(USER_REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "grpo_ray_test_user_mod", raising=False)
    fn = resolve_reward("grpo_ray_test_user_mod:shorter_is_better")
    assert score_completions([fn], ["q"], ["4"], {"answer": ["4"]}, [{}]) == [[1.0]]
    monkeypatch.delitem(sys.modules, "grpo_ray_test_user_mod")


def test_builtin_by_module_path() -> None:
    assert resolve_reward("grpo_ray.rewards.correctness:correctness_reward") is correctness_reward


def test_unknown_name_lists_known_and_suggests() -> None:
    with pytest.raises(RewardSpecError) as e:
        resolve_reward("corectness")
    message = one_line(e)
    assert "unknown reward function 'corectness'" in message
    assert "did you mean 'correctness'?" in message
    assert "xml_count" in message and "module:function" in message


def test_missing_module(tmp_path: Path) -> None:
    with pytest.raises(RewardSpecError) as e:
        resolve_reward("no_such_pkg_xyz.rewards:fn")
    assert "module 'no_such_pkg_xyz.rewards' is not importable" in one_line(e)


def test_missing_import_inside_user_module_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "grpo_ray_test_broken_mod.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz") as e:
        resolve_reward("grpo_ray_test_broken_mod:fn")
    assert not isinstance(e.value, RewardSpecError)


def test_error_in_user_file_propagates(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("raise RuntimeError('boom in user code')\n")
    with pytest.raises(RuntimeError, match="boom in user code"):
        resolve_reward(f"{tmp_path}/bad.py:fn")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RewardSpecError) as e:
        resolve_reward(f"{tmp_path}/nope.py:fn")
    assert f"file '{tmp_path}/nope.py' not found" in one_line(e)


def test_missing_function_lists_callables(tmp_path: Path) -> None:
    (tmp_path / "my_rewards.py").write_text(USER_REWARDS)
    with pytest.raises(RewardSpecError) as e:
        resolve_reward(f"{tmp_path}/my_rewards.py:shorter")
    message = one_line(e)
    assert "has no 'shorter'" in message and "functions defined there: shorter_is_better" in message
    assert "_private" not in message


def test_not_callable(tmp_path: Path) -> None:
    (tmp_path / "my_rewards.py").write_text(USER_REWARDS)
    with pytest.raises(RewardSpecError) as e:
        resolve_reward(f"{tmp_path}/my_rewards.py:LIMIT")
    assert "'LIMIT' is a int, not a function" in one_line(e)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("rewards.py", "names a file but no function"),
        ("some.module:", "expected 'module:function'"),
        (":fn", "expected 'module:function'"),
        ("", "empty"),
    ],
)
def test_malformed_specs(spec: str, fragment: str) -> None:
    with pytest.raises(RewardSpecError) as e:
        resolve_reward(spec)
    assert fragment in one_line(e)


def test_reward_spec_error_is_a_value_error() -> None:
    assert issubclass(RewardSpecError, ValueError)


def test_callables_pass_through() -> None:
    assert resolve_reward(integer_reward) is integer_reward


# --- score_completions ------------------------------------------------------------------------
def test_score_passes_columns_and_per_function_kwargs() -> None:
    thinking = "<thinking>\nr\n</thinking>\n<answer>\n4\n</answer>\n"
    rewards = score_completions(
        [strict_format_reward, strict_format_reward, correctness_reward],
        ["q"],
        [thinking],
        {"answer": ["4"]},
        [{"tag_style": "thinking"}, {}, {"tag_style": "thinking"}],
    )
    assert rewards == [[0.5], [0.0], [1.0]]


def test_score_converts_values_and_keeps_none() -> None:
    def mixed(prompts, completions, **kwargs):
        return [1, True, None, float("nan"), np.float32(0.25)]

    (row,) = score_completions([mixed], ["q"] * 5, ["c"] * 5, {}, [{}])
    assert row == [1.0, 1.0, None, None, 0.25]
    assert all(type(v) is float for v in row if v is not None)


def test_score_wrong_length_names_the_function() -> None:
    def too_few(prompts, completions, **kwargs):
        return [1.0]

    with pytest.raises(ValueError) as e:
        score_completions([too_few], ["q", "q"], ["a", "b"], {}, [{}])
    assert "reward function 'too_few' returned 1 rewards for 2 completions" in one_line(e)


@pytest.mark.parametrize(
    ("returned", "error", "fragment"),
    [
        (0.5, TypeError, "returned float; it must return a list"),
        ("0.5", TypeError, "returned str"),
        ({"a": 1.0}, TypeError, "returned dict"),
        (["high"], TypeError, "returned str 'high' at index 0"),
        (["0.5"], TypeError, "returned str '0.5' at index 0; rewards must be numbers or None"),
        ([math.inf], ValueError, "returned inf at index 0; rewards must be finite"),
    ],
)
def test_score_rejects_bad_returns(returned: object, error: type, fragment: str) -> None:
    def bad(prompts, completions, **kwargs):
        return returned

    with pytest.raises(error) as e:
        score_completions([functools.partial(bad)], ["q"], ["a"], {}, [{}])
    assert "'bad'" in one_line(e) and fragment in str(e.value)


def test_score_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 2 completions"):
        score_completions([integer_reward], ["q", "q"], ["a", "b"], {"answer": ["1"]}, [{}])
    with pytest.raises(ValueError, match="1 prompts for 2 completions"):
        score_completions([integer_reward], ["q"], ["a", "b"], {}, [{}])
    with pytest.raises(ValueError, match="0 kwargs dicts for 1 reward functions"):
        score_completions([integer_reward], ["q"], ["a"], {}, [])
    with pytest.raises(ValueError, match=r"'correctness_reward': kwargs \['answer'\] clash"):
        score_completions([correctness_reward], ["q"], ["a"], {"answer": ["1"]}, [{"answer": ["2"]}])


def test_reward_name() -> None:
    assert reward_name(functools.partial(integer_reward, tag_style="thinking")) == "integer_reward"


# --- the convention every built-in follows ------------------------------------------------------
COLUMNS = {
    "answer": ["yes", None],
    "final_decision": ["yes", None],
    "reference": [None, None],  # keeps semantic_similarity from loading a model here
    "completion_ids": [[1, 2], [3]],
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
@pytest.mark.parametrize("style", ["reasoning", "thinking"])
def test_every_builtin_follows_the_convention(name: str, style: str) -> None:
    completions = ["<answer>\nyes\n</answer>", [{"role": "assistant", "content": "no"}]]
    # TRL also passes trainer_state, log_extra and log_metric; anything unknown must be ignored
    kwargs = {"tag_style": style, "an_unknown_kwarg": 1, "log_extra": print, "log_metric": print}
    if name == "semantic_similarity":
        kwargs["reference_column"] = "reference"
    if name == "lm_judge":  # the cluster passes the run's judge actor; any object with p_yes will do
        kwargs["judge"] = type("Judge", (), {"p_yes": lambda self, texts: [0.5] * len(texts)})()
    if name == "soft_overlong":  # L_max has no sensible default: it is the run's generation limit
        kwargs.update(max_completion_len=2, soft_punish_cache=1)
    out = REWARDS.get(name)(prompts=["q", "q"], completions=completions, trainer_state=object(), **COLUMNS, **kwargs)
    assert isinstance(out, list) and len(out) == 2
    assert all(v is None or type(v) is float for v in out)
