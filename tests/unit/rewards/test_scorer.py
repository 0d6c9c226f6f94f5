"""RewardScorer: concurrency, per-batch timeouts, failures as NaN reported once, display names, and
the split/merge helpers the driver uses to share a batch among reward workers.

Behaviour that must not depend on where functions run is tested with both ``isolation="thread"``
and ``isolation="process"``; what only processes can do (stop a function) is in test_isolation.py.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import typing
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from grpo_ray.algo import combine_rewards
from grpo_ray.config import RewardIsolation
from grpo_ray.wire import shard_slices
from grpo_ray.rewards.scorer import (
    ISOLATIONS,
    RewardScorer,
    ScoreResult,
    merge_score_results,
    resolve_specs,
)
from tests.unit.rewards.toy_rewards import (
    broken_reward,
    exact_reward,
    is_thinking_reward,
    length_reward,
    sleepy_reward,
)

pytestmark = pytest.mark.unit

PROMPTS = ["Q1", "Q1", "Q2", "Q2"]
COMPLETIONS = ["a", "bb", "ccc", "dddd"]
COLUMNS = {"answer": ["a", "x", "ccc", "y"]}


def spec(fn: Any, name: str | None = None, weight: float = 1.0, **kwargs: Any) -> dict[str, Any]:
    return {"name": name or getattr(fn, "__name__", str(fn)), "fn": fn, "weight": weight, "kwargs": kwargs}


def score(scorer: RewardScorer) -> ScoreResult:
    return scorer.score(PROMPTS, COMPLETIONS, COLUMNS)


def column(result: ScoreResult, name: str) -> list[float]:
    j = result.names.index(name)
    return [row[j] for row in result.rewards]


@pytest.fixture(params=["thread", "process"])
def isolation(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make(isolation: str) -> Iterator[Any]:
    """``make(specs, timeout_s)``: a scorer under the parametrised isolation, closed after the test."""
    scorers: list[RewardScorer] = []

    def build(specs: list[dict[str, Any]], timeout_s: float = 5.0, **kwargs: Any) -> RewardScorer:
        scorers.append(RewardScorer(specs, "reasoning", timeout_s, isolation=isolation, **kwargs))
        return scorers[-1]

    yield build
    for scorer in scorers:
        scorer.close()


def test_rewards_are_n_by_f_in_config_order_with_config_names_and_weights(make) -> None:
    scorer = make([spec(length_reward, "len", 0.5), spec(exact_reward, "exact", 2.0)])
    result = score(scorer)
    assert result.names == ["len", "exact"]
    assert result.weights == [0.5, 2.0]
    assert result.rewards == [[1.0, 1.0], [2.0, 0.0], [3.0, 1.0], [4.0, 0.0]]
    assert result.failures == {} and result.new_errors == []
    assert set(result.seconds) == {"len", "exact"}
    combined = combine_rewards(torch.tensor(result.rewards), result.weights)
    assert combined.tolist() == [2.5, 1.0, 3.5, 2.0]


def test_builtin_names_resolve_and_none_becomes_nan(make) -> None:
    scorer = make([{"name": "correctness", "weight": 1.0, "kwargs": {}}])
    result = scorer.score(["Q", "Q"], ["<answer>\n4\n</answer>", "no answer"], {"answer": ["4", None]})
    assert result.names == ["correctness"]
    assert result.rewards[0] == [1.0]
    assert math.isnan(result.rewards[1][0])


def test_functions_run_concurrently(make) -> None:
    # Sequentially this takes >= 1.0 s; concurrently ~0.5 s. The margin allows for a noisy machine.
    scorer = make([spec(sleepy_reward, "a", seconds=0.5, value=1.0), spec(sleepy_reward, "b", seconds=0.5, value=2.0)],
                  timeout_s=10)
    start = time.perf_counter()
    result = score(scorer)
    took = time.perf_counter() - start
    assert took < 0.9, f"two 0.5 s rewards took {took:.2f} s: they did not run concurrently"
    assert result.rewards == [[1.0, 2.0]] * 4
    assert 0.45 < result.seconds["a"] < 0.9


def test_raising_function_is_nan_counted_and_reported_once(make, caplog: pytest.LogCaptureFixture) -> None:
    scorer = make([spec(length_reward, "len"), spec(broken_reward, "broken")])
    with caplog.at_level(logging.WARNING, logger="grpo_ray.rewards"):
        first, second = score(scorer), score(scorer)
    for result in (first, second):
        assert all(math.isnan(v) for v in column(result, "broken"))
        assert column(result, "len") == [1.0, 2.0, 3.0, 4.0]
        assert result.failures == {"broken": 1}
    assert len(first.new_errors) == 1 and second.new_errors == []
    error = first.new_errors[0]
    assert "\n" not in error
    assert "'broken'" in error and "ZeroDivisionError" in error and "division by zero" in error
    warnings = [r for r in caplog.records if r.name == "grpo_ray.rewards"]
    assert len(warnings) == 1
    # the log line is the message, then (once, for the worker's log) the traceback of the user's code
    logged = warnings[0].getMessage() + (caplog.text if warnings[0].exc_info else "")
    assert logged.startswith(error) and "toy_rewards.py" in logged and "broken_reward" in logged


def test_wrong_length_result_is_a_failure_of_that_function_only(make) -> None:
    result = score(make([spec(sleepy_reward, "short", seconds=0.0), spec(length_reward, "len")]))
    assert result.failures == {}  # sleepy returns one value per completion: the control
    short = lambda prompts, completions, **kwargs: [1.0]  # noqa: E731 - pickled by value into a process
    result = score(make([spec(short, "short"), spec(length_reward, "len")]))
    assert all(math.isnan(v) for v in column(result, "short"))
    assert column(result, "len") == [1.0, 2.0, 3.0, 4.0]
    assert "returned 1 rewards for 4 completions" in result.new_errors[0]


def test_slow_function_times_out_without_blocking_the_next_batch(make) -> None:
    scorer = make([spec(sleepy_reward, "hung", seconds=3.0, value=9.0), spec(length_reward, "len")], timeout_s=0.3)
    errors = []
    for batch in range(2):  # with threads, the first batch's thread is still sleeping while the second runs
        start = time.perf_counter()
        result = score(scorer)
        took = time.perf_counter() - start
        assert took < 0.3 + 0.7, f"batch {batch} took {took:.2f} s with a 0.3 s timeout"
        assert all(math.isnan(v) for v in column(result, "hung"))
        assert column(result, "len") == [1.0, 2.0, 3.0, 4.0]
        assert result.failures == {"hung": 1}
        assert result.seconds["hung"] == pytest.approx(0.3)
        errors += result.new_errors
    assert len(errors) == 1 and "'hung'" in errors[0] and "timed out after 0.3s" in errors[0]


def test_thread_that_waits_on_an_event_times_out() -> None:
    # Thread-run functions may hold what cannot cross a process boundary (an Event here).
    release = threading.Event()

    def hung(prompts, completions, **kwargs):
        release.wait(10)
        return [9.0] * len(completions)

    with RewardScorer([spec(hung, "hung"), spec(length_reward, "len")], "reasoning", 0.3, isolation="thread") as scorer:
        try:
            result = score(scorer)
        finally:
            release.set()
    assert result.failures == {"hung": 1} and column(result, "len") == [1.0, 2.0, 3.0, 4.0]


def test_timeout_is_one_deadline_for_the_batch(make) -> None:
    # Two 0.4 s functions under a 0.6 s timeout both finish: each is not given its own 0.6 s after
    # the other, and neither is cut short by the other's time.
    scorer = make([spec(sleepy_reward, "a", seconds=0.4), spec(sleepy_reward, "b", seconds=0.4)], timeout_s=0.6)
    assert score(scorer).failures == {}


def test_isolation_choices_match_the_config() -> None:
    assert sorted(typing.get_args(RewardIsolation)) == sorted(ISOLATIONS)


def test_tag_style_reaches_process_run_functions(make) -> None:
    result = make([spec(is_thinking_reward, "t")]).score(["q"], ["c"], {})
    assert result.rewards == [[0.0]]  # the scorer's tag_style is "reasoning"
    result = make([spec(is_thinking_reward, "t", tag_style="thinking")]).score(["q"], ["c"], {})
    assert result.rewards == [[1.0]]


def test_tag_style_is_passed_unless_set_or_not_accepted() -> None:
    seen: dict[str, Any] = {}

    def wants_style(prompts, completions, tag_style="none"):
        seen.setdefault("wants", []).append(tag_style)
        return [0.0] * len(completions)

    def any_kwargs(prompts, completions, **kwargs):
        seen.setdefault("any", []).append(kwargs.get("tag_style"))
        return [0.0] * len(completions)

    def no_kwargs(prompts, completions):
        return [0.0] * len(completions)

    specs = [spec(wants_style, "w"), spec(any_kwargs, "a", tag_style="reasoning"), spec(no_kwargs, "n")]
    result = RewardScorer(specs, "thinking", 5, isolation="thread").score(["q"], ["c"], {})
    assert result.failures == {}
    assert seen == {"wants": ["thinking"], "any": ["reasoning"]}


def test_same_function_twice_gets_unique_names() -> None:
    specs = [
        {"name": "length_penalty", "kwargs": {"max_tokens": 1}},
        {"name": "length_penalty", "kwargs": {"max_tokens": 100}},
    ]
    result = RewardScorer(specs, "reasoning", 5).score(["q"], ["one two three"], {})
    assert result.names == ["length_penalty", "length_penalty#2"]
    assert result.weights == [1.0, 1.0]
    assert result.rewards[0][0] < result.rewards[0][1]


def test_caller_mistakes_raise_instead_of_failing_functions() -> None:
    scorer = RewardScorer([spec(exact_reward, "exact", answer="a")], "reasoning", 5)
    with pytest.raises(ValueError, match="clash with dataset columns"):
        score(scorer)
    scorer = RewardScorer([spec(length_reward, "len")], "reasoning", 5)
    with pytest.raises(ValueError, match="column 'answer' has 3 values for 4 completions"):
        scorer.score(PROMPTS, COMPLETIONS, {"answer": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="3 prompts for 4 completions"):
        scorer.score(PROMPTS[:3], COMPLETIONS, {})
    with pytest.raises(ValueError, match="unknown reward function"):
        RewardScorer([{"name": "no_such_reward"}], "reasoning", 5)


def test_resolve_specs_loads_user_files_once(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("def double(prompts, completions, **kw):\n    return [2.0] * len(completions)\n")
    specs = resolve_specs([{"name": f"{tmp_path}/mine.py:double", "weight": 1.0, "kwargs": {}}])
    assert callable(specs[0]["fn"]) and specs[0]["name"].endswith("mine.py:double")
    (tmp_path / "mine.py").unlink()  # the resolved function no longer needs the file
    assert RewardScorer(specs, "reasoning", 5).score(["q"], ["c"], {}).rewards == [[2.0]]


def test_merged_shards_equal_one_batch() -> None:
    specs = [spec(length_reward, "len"), spec(exact_reward, "exact", 2.0), spec(broken_reward, "broken")]
    whole = score(RewardScorer(specs, "reasoning", 5))
    shards = []
    for s in shard_slices(len(COMPLETIONS), 2, unit=2):
        scorer = RewardScorer(specs, "reasoning", 5)  # one per worker, as actors have
        shards.append(scorer.score(PROMPTS[s], COMPLETIONS[s], {k: v[s] for k, v in COLUMNS.items()}))
    merged = merge_score_results(shards)
    assert merged.names == whole.names and merged.weights == whole.weights
    assert str(merged.rewards) == str(whole.rewards)  # NaN-aware equality
    assert merged.failures == {"broken": 2}
    assert merged.new_errors == whole.new_errors  # both workers report it; kept once
    with pytest.raises(ValueError, match="disagree on functions"):
        merge_score_results([whole, ScoreResult([], ["other"], [1.0])])
