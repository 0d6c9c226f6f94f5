"""What only process isolation can do: stop a function at its timeout (no core left burning), keep
thread and process counts flat batch after batch, survive a function that kills its process, warm up
outside the timeout, and never outlive the process that started it.

Each claim about processes is paired with the same measurement under ``isolation="thread"``, which
shows the problem the processes remove (and that the measurement would catch it).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from grpo_ray.rewards.scorer import RewardScorer
from tests.unit.rewards.toy_rewards import (
    busy_reward,
    chatty_reward,
    exiting_reward,
    failing_warm_reward,
    length_reward,
    pid_reward,
    sleepy_reward,
    warm_reward,
)

pytestmark = pytest.mark.unit

PROMPTS, COMPLETIONS = ["q", "q"], ["a", "bb"]
REPO = Path(__file__).resolve().parents[3]


def spec(fn: Any, name: str, **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "fn": fn, "kwargs": kwargs}


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


def burn_after(scorer: RewardScorer, window_s: float = 2.0) -> float:
    """CPU seconds this process tree spends in ``window_s`` after a batch, once it is ready again."""
    result = scorer.score(PROMPTS, COMPLETIONS, {})
    assert result.failures == {"busy": 1} and all(math.isnan(row[0]) for row in result.rewards)
    scorer.wait_ready()  # the replacement process has started and warmed up: its start-up is not counted
    me = psutil.Process()
    before = cpu_seconds(me)
    time.sleep(window_s)
    return cpu_seconds(me) - before


def test_busy_loop_is_stopped_at_its_timeout() -> None:
    with RewardScorer([spec(busy_reward, "busy", seconds=4.0)], "reasoning", 0.3, isolation="process") as scorer:
        old_pid = scorer.processes["busy"].pid
        burnt = burn_after(scorer)
        assert not alive(old_pid)
    # measured: 0.00-0.01 s in 2 s (the replacement idles in a blocking read)
    assert burnt < 0.2, f"{burnt:.2f} CPU seconds in the 2 s after the timeout: the busy loop still runs"


def test_busy_loop_on_a_thread_keeps_burning() -> None:
    # The control: the same loop on a thread runs on after its timeout (for its bounded 2.5 s).
    with RewardScorer([spec(busy_reward, "busy", seconds=2.5)], "reasoning", 0.3, isolation="thread") as scorer:
        burnt = burn_after(scorer, window_s=1.5)
    assert burnt > 0.6, f"only {burnt:.2f} CPU seconds in 1.5 s: the measurement cannot see a busy loop"
    time.sleep(1.0)  # let the thread's loop end before other tests run


def threads_and_children(ignore: frozenset[int] = frozenset()) -> tuple[int, list[psutil.Process]]:
    """This process's thread count and its children that still exist, less ``ignore`` (the pids of
    children that an earlier test left behind, a zombie not yet reaped say)."""
    me = psutil.Process()
    return me.num_threads(), [c for c in me.children(recursive=True) if c.pid not in ignore and c.is_running()]


def test_no_thread_or_process_leak_over_batches() -> None:
    specs = [spec(sleepy_reward, "slow", seconds=30.0), spec(busy_reward, "busy", seconds=30.0),
             spec(length_reward, "len")]
    earlier = frozenset(c.pid for c in psutil.Process().children(recursive=True))
    with RewardScorer(specs, "reasoning", 0.2, isolation="process") as scorer:
        scorer.score(PROMPTS, COMPLETIONS, {})
        scorer.wait_ready()
        threads, children = threads_and_children(earlier)
        for _ in range(5):
            result = scorer.score(PROMPTS, COMPLETIONS, {})
            assert result.failures == {"slow": 1, "busy": 1}
            assert [row[2] for row in result.rewards] == [1.0, 2.0]
        scorer.wait_ready()
        threads_after, children_after = threads_and_children(earlier)
        assert threads_after == threads, f"{threads} threads before 5 batches, {threads_after} after"
        assert len(children_after) == len(children) == 3  # one process per function, replaced not added
        assert all(c.status() != psutil.STATUS_ZOMBIE for c in children_after)
        assert scorer.processes["slow"].starts == scorer.processes["busy"].starts == 7
    assert threads_and_children(earlier)[1] == []  # close() stops and reaps them all


def test_threads_leak_one_per_hung_batch() -> None:
    # The control: each batch's thread still sleeps when the next batch starts its own.
    with RewardScorer([spec(sleepy_reward, "slow", seconds=2.0)], "reasoning", 0.05, isolation="thread") as scorer:
        threads = psutil.Process().num_threads()
        for _ in range(5):
            scorer.score(PROMPTS, COMPLETIONS, {})
        assert psutil.Process().num_threads() >= threads + 5
    time.sleep(2.0)


def test_a_function_that_kills_its_process_fails_and_gets_a_new_one() -> None:
    specs = [spec(exiting_reward, "exits"), spec(pid_reward, "pid"), spec(chatty_reward, "chatty")]
    with RewardScorer(specs, "reasoning", 5.0, isolation="process") as scorer:
        first, second = (scorer.score(PROMPTS, COMPLETIONS, {}) for _ in range(2))
        assert first.failures == second.failures == {"exits": 1}
        assert "its reward process exited with code 3" in first.new_errors[0] and second.new_errors == []
        assert scorer.processes["exits"].starts == 2  # replaced before the second batch
        # the others are untouched: same process, and a print to stdout does not break the pipe
        assert first.rewards[0][1] == second.rewards[0][1] == scorer.processes["pid"].pid
        assert first.rewards[0][2] == second.rewards[0][2] == 0.5


def test_unpicklable_function_fails_saying_how_to_fix_it() -> None:
    import threading

    lock = threading.Lock()

    def holds_a_lock(prompts, completions, **kwargs):
        with lock:
            return [1.0] * len(completions)

    with RewardScorer([spec(holds_a_lock, "locked")], "reasoning", 5.0, isolation="process") as scorer:
        result = scorer.score(PROMPTS, COMPLETIONS, {})
    assert result.failures == {"locked": 1}
    assert "cannot be sent to a reward process" in result.new_errors[0]
    assert "reward.isolation=thread" in result.new_errors[0]
    with RewardScorer([spec(holds_a_lock, "locked")], "reasoning", 5.0, isolation="thread") as scorer:
        assert scorer.score(PROMPTS, COMPLETIONS, {}).failures == {}


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_slow_warmup_is_outside_the_timeout(isolation: str, tmp_path: Path) -> None:
    log = tmp_path / "warmups.txt"
    # the warm-up sleeps 1.0 s, longer than the 0.5 s timeout: a load counted in the batch would fail it
    specs = [spec(warm_reward, "warm", log_path=str(log), load_s=1.0)]
    with RewardScorer(specs, "reasoning", 0.5, isolation=isolation) as scorer:
        for _ in range(2):
            result = scorer.score(PROMPTS, COMPLETIONS, {})
            assert result.failures == {} and result.rewards == [[1.0], [1.0]]
    assert len(log.read_text().splitlines()) == 1  # once, not once per batch


def test_warmup_runs_again_in_the_replacement_process(tmp_path: Path) -> None:
    log = tmp_path / "warmups.txt"
    specs = [spec(warm_reward, "warm", log_path=str(log), load_s=0.6), spec(sleepy_reward, "slow", seconds=30.0)]
    with RewardScorer(specs, "reasoning", 0.4, isolation="process") as scorer:
        scorer.processes["warm"].stop()  # as a timeout would: the next batch starts and warms a new one
        result = scorer.score(PROMPTS, COMPLETIONS, {})
        assert result.failures == {"slow": 1} and [row[0] for row in result.rewards] == [1.0, 1.0]
    pids = log.read_text().splitlines()
    assert len(pids) == 2 and pids[0] != pids[1]


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_failed_warmup_is_a_failure_reported_once(isolation: str) -> None:
    specs = [spec(failing_warm_reward, "unloadable"), spec(length_reward, "len")]
    with RewardScorer(specs, "reasoning", 5.0, isolation=isolation) as scorer:
        first, second = (scorer.score(PROMPTS, COMPLETIONS, {}) for _ in range(2))
    assert first.failures == second.failures == {"unloadable": 1}
    assert len(first.new_errors) == 1 and second.new_errors == []
    assert "warm-up: FileNotFoundError: no model at /nowhere" in first.new_errors[0]
    assert [row[1] for row in second.rewards] == [1.0, 2.0]


def test_warmup_longer_than_its_limit_fails_the_function(tmp_path: Path) -> None:
    specs = [spec(warm_reward, "warm", log_path=str(tmp_path / "log"), load_s=30.0)]
    start = time.perf_counter()
    with RewardScorer(specs, "reasoning", 5.0, isolation="process", warmup_timeout_s=0.5) as scorer:
        assert time.perf_counter() - start < 5.0
        result = scorer.score(PROMPTS, COMPLETIONS, {})
        assert scorer.processes["warm"].pid is None  # killed, not left loading
    assert "warm-up took longer than reward.warmup_timeout_s=0.5s" in result.new_errors[0]


def test_auto_runs_builtins_on_threads_and_user_code_in_processes(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text("def one(prompts, completions, **kw):\n    return [1.0] * len(completions)\n")
    specs = [{"name": "correctness"}, {"name": "semantic_similarity"}, {"name": f"{tmp_path}/mine.py:one"},
             {"name": "grpo_ray.rewards.formatting:xml_count_reward"}]
    # semantic_similarity's warm-up loads its embedder: skip it here, it has tests of its own
    with RewardScorer(specs[:1] + specs[2:], "reasoning", 5.0) as scorer:
        assert sorted(scorer.processes) == ["mine.one"]  # the module path names the built-in itself
        assert scorer.names == ["correctness", "mine.one", "formatting.xml_count_reward"]
        assert scorer.specs == ["correctness", f"{tmp_path}/mine.py:one", "grpo_ray.rewards.formatting:xml_count_reward"]
    from grpo_ray.rewards import REWARDS

    assert not REWARDS.traits("semantic_similarity").in_process  # it loads a model: a process under auto


CHILD = textwrap.dedent(
    """
    import sys, time
    from grpo_ray.rewards.scorer import RewardScorer
    from tests.unit.rewards.toy_rewards import busy_reward
    scorer = RewardScorer([{"name": "busy", "fn": busy_reward, "kwargs": {"seconds": 60}}], "reasoning", 60.0,
                          isolation="process")
    print(scorer.processes["busy"].pid, flush=True)
    scorer.score(["q"], ["c"], {})  # busy for 60 s in the reward process while this one is killed
    """
)


@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "other-thread"])
def test_reward_processes_die_with_their_parent(thread: bool) -> None:
    # From a non-main thread PR_SET_PDEATHSIG would fire when that thread ends, so it is not used there;
    # the watchdog thread is what stops the child then.
    code = CHILD if not thread else (
        "import threading\n" + "def main():\n" + textwrap.indent(CHILD, "    ")
        + "\nt = threading.Thread(target=main)\nt.start()\nt.join()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        child_pid = int(parent.stdout.readline())
        time.sleep(0.5)  # the batch is running: the child spins
        assert psutil.Process(child_pid).cpu_percent(interval=0.3) > 20
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 3.0
        while alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child_pid), "the reward process outlived its parent"
    finally:
        parent.kill()
        if child_pid is not None and alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead: it runs nothing)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
