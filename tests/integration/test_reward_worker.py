"""RewardWorker on a real local Ray cluster: concurrency, failures and timeouts inside the actor, a
user reward from a file shipped by value, a batch shared by two workers equal to one worker's, a busy
loop stopped at its timeout (no CPU burnt after it, no thread or process left over), and the LM judge
actor scoring through a reward worker and restarted by Ray after a SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

ray = pytest.importorskip("ray")

import psutil  # noqa: E402

from grpo_ray.actors.judge_worker import JudgeWorker, attach_judge  # noqa: E402
from grpo_ray.actors.reward_worker import RewardWorker, merge_score_results, resolve_specs  # noqa: E402
from grpo_ray.wire import shard_slices  # noqa: E402
from grpo_ray.rewards.scorer import ScoreResult  # noqa: E402

pytestmark = pytest.mark.integration

PROMPTS = ["Q1", "Q1", "Q2", "Q2", "Q3", "Q3"]
COMPLETIONS = ["<answer>\n1\n</answer>", "x", "<answer>\n2\n</answer>", "yy", "<answer>\n7\n</answer>", "zzz"]
COLUMNS = {"answer": ["1", "1", "5", "5", "7", "7"]}

USER_REWARDS = '''
BONUS = 0.25

def length_bonus(prompts, completions, **kwargs):
    return [BONUS * len(c) for c in completions]

def sleepy(prompts, completions, seconds=0.5, **kwargs):
    import time
    time.sleep(seconds)
    return [1.0] * len(completions)

def broken(prompts, completions, **kwargs):
    raise RuntimeError("judge unreachable")

def busy(prompts, completions, seconds=30.0, **kwargs):
    import time
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return [1.0] * len(completions)
'''


@pytest.fixture(scope="module")
def cluster(ray_cluster) -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rewards") / "user_rewards.py"
    path.write_text(USER_REWARDS)
    return path


def make_worker(specs: list[dict[str, Any]], timeout_s: float = 5.0) -> Any:
    return RewardWorker.remote(resolve_specs(specs), "reasoning", timeout_s)


def score(worker: Any, s: slice = slice(None)) -> ScoreResult:
    columns = {k: v[s] for k, v in COLUMNS.items()}
    return ray.get(worker.score.remote(PROMPTS[s], COMPLETIONS[s], columns), timeout=60)


def column(result: ScoreResult, name: str) -> list[float]:
    j = result.names.index(name)
    return [row[j] for row in result.rewards]


def test_user_reward_from_file_is_shipped_by_value(cluster: None, tmp_path: Path) -> None:
    path = tmp_path / "shipped.py"
    path.write_text(USER_REWARDS)
    specs = resolve_specs([{"name": f"{path}:length_bonus", "weight": 1.0, "kwargs": {}}])
    path.unlink()  # the actor must not need the file: the function travels in the actor's arguments
    worker = RewardWorker.remote(specs, "reasoning", 5.0)
    assert ray.get(worker.ping.remote(), timeout=60) == ["shipped.length_bonus"]  # the metric name: no folders
    result = score(worker)
    assert column(result, "shipped.length_bonus") == [0.25 * len(c) for c in COMPLETIONS]
    assert result.specs == [f"{path}:length_bonus"]  # the config's name, kept beside it


def test_functions_run_concurrently_in_the_actor(cluster: None, user_file: Path) -> None:
    specs = [{"name": f"{user_file}:sleepy", "kwargs": {"seconds": 0.5}}, {"name": f"{user_file}:sleepy"}]
    worker = make_worker(specs)
    ray.get(worker.ping.remote(), timeout=60)  # actor start-up is not part of the measurement
    start = time.perf_counter()
    result = score(worker)
    took = time.perf_counter() - start
    assert took < 0.9, f"two 0.5 s rewards took {took:.2f} s in the actor: they did not run concurrently"
    assert result.failures == {}
    assert result.rewards == [[1.0, 1.0]] * len(COMPLETIONS)


def test_failure_and_timeout_are_nan_and_reported_once(cluster: None, user_file: Path) -> None:
    specs = [
        {"name": "correctness"},
        {"name": f"{user_file}:broken"},
        {"name": f"{user_file}:sleepy", "kwargs": {"seconds": 30}},
    ]
    worker = make_worker(specs, timeout_s=0.5)
    ray.get(worker.ping.remote(), timeout=60)
    errors = []
    for _ in range(2):
        start = time.perf_counter()
        result = score(worker)
        took = time.perf_counter() - start
        assert took < 0.5 + 1.0, f"a batch with a 0.5 s timeout took {took:.2f} s"
        assert column(result, "correctness") == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        assert all(math.isnan(v) for v in column(result, "user_rewards.broken"))
        assert all(math.isnan(v) for v in column(result, "user_rewards.sleepy"))
        assert result.failures == {"user_rewards.broken": 1, "user_rewards.sleepy": 1}
        errors += result.new_errors
    assert len(errors) == 2
    assert any("RuntimeError: judge unreachable" in e for e in errors)
    assert any("timed out after 0.5s" in e for e in errors)


def test_two_workers_merged_equal_one_worker(cluster: None, user_file: Path) -> None:
    specs = [
        {"name": "correctness", "weight": 2.0},
        {"name": f"{user_file}:length_bonus"},
        {"name": f"{user_file}:broken"},
    ]
    one = score(make_worker(specs))
    workers = [make_worker(specs) for _ in range(2)]
    slices = shard_slices(len(COMPLETIONS), 2, unit=2)
    merged = merge_score_results(
        ray.get(
            [
                w.score.remote(PROMPTS[s], COMPLETIONS[s], {k: v[s] for k, v in COLUMNS.items()})
                for w, s in zip(workers, slices)
            ],
            timeout=60,
        )
    )
    assert [s.stop - s.start for s in slices] == [4, 2]
    assert merged.names == one.names and merged.weights == one.weights == [2.0, 1.0, 1.0]
    assert str(merged.rewards) == str(one.rewards)  # NaN-aware equality
    assert merged.failures == {"user_rewards.broken": 2}
    assert merged.new_errors == one.new_errors


def actor_pid(actor: Any) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of a process, its reaped children and its living descendants."""
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def test_busy_loop_stops_at_its_timeout_in_the_actor(cluster: None, user_file: Path) -> None:
    worker = make_worker([{"name": f"{user_file}:busy"}, {"name": "correctness"}], timeout_s=0.5)
    actor = psutil.Process(actor_pid(worker))
    wait_ready = lambda: ray.get(worker.__ray_call__.remote(lambda self: self.scorer.wait_ready()), timeout=60)  # noqa: E731
    pids = lambda self: {name: proc.pid for name, proc in self.scorer.processes.items()}  # noqa: E731
    first = ray.get(worker.__ray_call__.remote(pids), timeout=60)["user_rewards.busy"]
    result = score(worker)
    assert result.failures == {"user_rewards.busy": 1} and column(result, "correctness") == [1, 0, 0, 0, 1, 0]
    wait_ready()  # the replacement has started: its start-up is not part of the measurement
    threads, children = actor.num_threads(), actor.children(recursive=True)
    before = cpu_seconds(actor)
    time.sleep(2.0)
    burnt = cpu_seconds(actor) - before
    # measured 0.01-0.03 s (the actor's own Ray threads); a busy loop left on a thread burns ~1 s a second
    assert burnt < 0.3, f"the reward actor burnt {burnt:.2f} CPU seconds in the 2 s after the timeout"
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    for _ in range(5):
        assert score(worker).failures == {"user_rewards.busy": 1}
    wait_ready()
    # a thread per hung batch would add 5; allow one for Ray's own thread pool
    assert actor.num_threads() <= threads + 1, f"{threads} threads in the actor before 5 batches, {actor.num_threads()} after"
    after = actor.children(recursive=True)
    assert len(after) == len(children) == 1 and after[0].status() != psutil.STATUS_ZOMBIE
    ray.kill(worker)


def test_judge_actor_scores_through_a_reward_worker_and_survives_a_kill(cluster: None) -> None:
    judge = JudgeWorker.options(num_cpus=0.5, max_restarts=2, max_task_retries=1).remote("builtin:arithmetic-base")
    info = ray.get(judge.ready.remote(), timeout=120)
    assert info["device"] == "cpu"
    specs = attach_judge(resolve_specs([{"name": "lm_judge"}]), judge)
    worker = RewardWorker.remote(specs, "reasoning", 60.0)
    first = score(worker)
    values = column(first, "lm_judge")
    assert first.failures == {} and all(0.0 < v < 1.0 for v in values) and len(set(values)) > 1
    before = actor_pid(judge)
    os.kill(before, signal.SIGKILL)
    again = score(worker)  # Ray restarts the judge; the reward worker's call is retried on it
    assert actor_pid(judge) != before
    assert again.failures == {} and column(again, "lm_judge") == pytest.approx(values, abs=1e-5)
    ray.kill(worker)
    ray.kill(judge)

