"""soft_overlong: DAPO's soft overlong punishment at its boundaries, and against TRL's and verl's versions.

TRL 1.16's ``_SoftOverlongPunishment`` is compiled from the installed ``trl/rewards/other_rewards.py``
(importing ``trl.rewards`` would pull in transformers); verl's DAPO reward manager's overlong buffer
(``verl/workers/reward_manager/dapo.py:116-122`` at b178a3c) is transcribed below.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from grpo_ray.rewards import REWARDS, score_completions
from grpo_ray.rewards.length import soft_overlong_reward

pytestmark = pytest.mark.unit


def _reward(lengths, **kwargs):
    ids = [[7] * n for n in lengths]
    return soft_overlong_reward(None, [""] * len(ids), completion_ids=ids, **kwargs)


def test_boundaries_with_a_ramp_of_20_under_100():
    # L_max 100, L_cache 20: free up to 80 tokens, then -1/20 a token down to -1 at 100, then -1.
    lengths = [0, 79, 80, 81, 90, 99, 100, 101, 500]
    expected = [0.0, 0.0, 0.0, -0.05, -0.5, -0.95, -1.0, -1.0, -1.0]
    assert _reward(lengths, max_completion_len=100, soft_punish_cache=20) == pytest.approx(expected)


def test_penalty_factor_scales_the_ramp_and_the_floor():
    rewards = _reward([80, 90, 100, 120], max_completion_len=100, soft_punish_cache=20, penalty_factor=0.5)
    assert rewards == pytest.approx([0.0, -0.25, -0.5, -0.5])


def test_no_ramp_is_a_hard_penalty_above_the_limit():
    assert _reward([0, 100, 101], max_completion_len=100, soft_punish_cache=0) == [0.0, 0.0, -1.0]


def test_a_ramp_over_the_whole_length():
    assert _reward([0, 1, 4, 5, 6], max_completion_len=5, soft_punish_cache=5) == pytest.approx(
        [0.0, -0.2, -0.8, -1.0, -1.0]
    )


def test_counts_tokens_not_characters():
    """The length is len(completion_ids), whatever the text says."""
    rewards = soft_overlong_reward(
        None, ["x" * 1000, ""], completion_ids=[[1] * 3, [1] * 10], max_completion_len=10, soft_punish_cache=5
    )
    assert rewards == [0.0, -1.0]


def test_missing_settings_are_a_one_line_error():
    with pytest.raises(ValueError, match="needs kwargs max_completion_len") as excinfo:
        _reward([1])
    assert "\n" not in str(excinfo.value)


def test_ramp_longer_than_the_limit_is_an_error():
    with pytest.raises(ValueError, match=r"soft_punish_cache=200 must be in \[0, max_completion_len=100\]"):
        _reward([1], max_completion_len=100, soft_punish_cache=200)


def test_needs_completion_ids():
    with pytest.raises(ValueError, match="reward 'soft_overlong' needs the column 'completion_ids'"):
        soft_overlong_reward(None, ["a"], max_completion_len=10, soft_punish_cache=2)


def test_registered_and_called_like_the_other_rewards():
    """Through the registry and score_completions, with completion_ids as a column as the driver passes it."""
    fn = REWARDS.get("soft_overlong")
    columns = {"completion_ids": [[1] * 4, [1] * 9]}
    kwargs = {"max_completion_len": 10, "soft_punish_cache": 4}
    assert score_completions([fn], ["q", "q"], ["a", "b"], columns, [kwargs]) == [[0.0, -0.75]]


# ---- the references ----


@pytest.fixture(scope="module")
def trl_soft_overlong():
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("trl is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "rewards" / "other_rewards.py"
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in
             {"_SoftOverlongPunishment", "get_soft_overlong_punishment"}]
    assert len(nodes) == 2, "TRL moved or renamed get_soft_overlong_punishment"
    namespace: dict = {}
    # Trusted source: the installed TRL package, compiled alone to skip its slow imports.
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace["get_soft_overlong_punishment"]


@pytest.mark.parametrize(("max_len", "cache"), [(100, 20), (100, 0), (5, 5), (64, 16)])
def test_matches_trl(trl_soft_overlong, max_len, cache):
    lengths = list(range(0, max_len + 30))
    expected = trl_soft_overlong(max_completion_len=max_len, soft_punish_cache=cache)([[7] * n for n in lengths])
    assert _reward(lengths, max_completion_len=max_len, soft_punish_cache=cache) == pytest.approx(expected)


def verl_overlong_reward(valid_response_length, max_resp_len, overlong_buffer_len, overlong_penalty_factor):
    """verl/workers/reward_manager/dapo.py:117-121 (the reward added to the task score)."""
    expected_len = max_resp_len - overlong_buffer_len
    exceed_len = valid_response_length - expected_len
    return min(-exceed_len / overlong_buffer_len * overlong_penalty_factor, 0)


@pytest.mark.parametrize(("max_len", "buffer", "factor"), [(100, 20, 1.0), (256, 64, 0.5), (8, 8, 2.0)])
def test_matches_verl_up_to_the_limit(max_len, buffer, factor):
    lengths = list(range(0, max_len + 1))  # verl's generations stop at max_resp_len
    expected = [verl_overlong_reward(n, max_len, buffer, factor) for n in lengths]
    rewards = _reward(lengths, max_completion_len=max_len, soft_punish_cache=buffer, penalty_factor=factor)
    assert rewards == pytest.approx(expected)
