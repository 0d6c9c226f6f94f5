"""Scoring one batch with every reward function at once, each under a timeout.

``RewardScorer`` is what a ``RewardWorker`` actor wraps; it needs no Ray, so it is tested (and can be
used) in a plain process. Each reward function gets its own thread per batch, and all of them share
one deadline, ``timeout_s`` after the batch starts. A function that raises, returns something that is
not one number-or-None per completion, or misses the deadline is "not applicable" for the whole batch:
its column is NaN (which ``combine_rewards`` skips), the batch's ``failures`` counts it, and its error
is reported once per scorer lifetime rather than once per batch.

Threads, not processes: reward functions that wait on I/O, a model server or a tokenizer written in
Rust release the GIL and really overlap; pure-Python CPU-bound ones do not, and scale with more reward
workers instead (``reward.num_workers``).

A thread that misses the deadline cannot be killed. It is a daemon thread, started fresh for each
batch, so it runs on in the background until its function returns, without blocking later batches
(they start their own threads) or the process's exit. Its late result is thrown away. The one cost
is that a function which hangs on every batch leaks one thread per batch; the once-per-function
warning says which function to fix.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpo_ray.rewards.registry import RewardFn, resolve_reward, reward_name, score_completions

logger = logging.getLogger("grpo_ray.rewards")

_MAX_ERROR_CHARS = 300


@dataclass
class ScoreResult:
    """Rewards for N completions from F reward functions.

    Attributes:
        rewards: [N][F] floats, NaN where a function does not apply or failed; the input of
            ``grpo_ray.algo.combine_rewards`` once made a tensor.
        names: F reward names as the config gives them (made unique with ``#2``, ``#3``... when the
            same function is listed twice).
        weights: F weights, in the same order.
        failures: per name, how many batches (shards, after merging) the function failed on.
        new_errors: one line per function whose first failure this is in the scorer's lifetime.
        seconds: per name, wall time of the function on this batch (the timeout if it missed it).
    """

    rewards: list[list[float]]
    names: list[str]
    weights: list[float]
    failures: dict[str, int] = field(default_factory=dict)
    new_errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Reward:
    name: str
    fn: RewardFn
    weight: float
    kwargs: Mapping[str, Any]


def resolve_specs(functions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of reward specs with ``"fn"`` set to the resolved function.

    The driver calls this before creating reward actors: a ``path/file.py:function`` spec is then
    shipped to the actor by value (cloudpickle), so workers on other nodes need not have the file,
    and a bad spec fails once, in the driver, with its one-line message.
    """
    return [{**spec, "fn": resolve_reward(spec.get("fn") or spec["name"])} for spec in functions]


def _accepts(fn: RewardFn, kwarg: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature: assume yes
        return True
    return any(p.name == kwarg or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _unique_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


class RewardScorer:
    """Runs F reward functions concurrently on a batch; see the module docstring.

    Args:
        functions: specs as ``RewardFunctionConfig.model_dump()`` gives them (``name``, ``weight``,
            ``kwargs``), optionally with ``fn`` already resolved (see :func:`resolve_specs`).
        tag_style: passed to every function as ``tag_style=`` unless its own kwargs set it or its
            signature takes neither ``tag_style`` nor ``**kwargs``.
        timeout_s: deadline for the whole batch, shared by all functions, counted from its start.
    """

    def __init__(self, functions: Sequence[Mapping[str, Any]], tag_style: str, timeout_s: float) -> None:
        if not functions:
            raise ValueError("RewardScorer needs at least one reward function (reward.functions is empty)")
        if timeout_s <= 0:
            raise ValueError(f"reward.timeout_s={timeout_s}: must be positive")
        self.timeout_s = float(timeout_s)
        names = _unique_names([str(spec["name"]) for spec in functions])
        self.functions: list[_Reward] = []  # in config order
        for name, spec in zip(names, functions):
            fn = resolve_reward(spec.get("fn") or spec["name"])
            kwargs = dict(spec.get("kwargs") or {})
            if "tag_style" not in kwargs and _accepts(fn, "tag_style"):
                kwargs["tag_style"] = tag_style
            self.functions.append(_Reward(name, fn, float(spec.get("weight", 1.0)), kwargs))
        self._reported: set[str] = set()  # names whose first error was already reported

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.functions]

    @property
    def weights(self) -> list[float]:
        return [r.weight for r in self.functions]

    def score(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Sequence[Any]]
    ) -> ScoreResult:
        """Rewards [N][F] for N completions (prompts repeated per completion, columns of length N)."""
        self._check_inputs(prompts, completions, columns)
        elapsed: dict[str, float] = {}  # written by each thread before it completes its future
        futures = [self._start(r, prompts, completions, columns, elapsed) for r in self.functions]
        concurrent.futures.wait(futures, timeout=self.timeout_s)  # one deadline for the whole batch
        n = len(completions)
        rows = [[math.nan] * len(self.functions) for _ in range(n)]
        failures: dict[str, int] = {}
        new_errors: list[str] = []
        seconds: dict[str, float] = {}
        for col, (reward, future) in enumerate(zip(self.functions, futures)):
            done = future.done()  # read once: a late thread may finish while we look
            err = future.exception() if done else None
            if done and err is None:
                for i, value in enumerate(future.result()):
                    rows[i][col] = math.nan if value is None else value
                seconds[reward.name] = elapsed[reward.name]
                continue
            if done:
                error = f"{type(err).__name__}: {err}"
                seconds[reward.name] = elapsed[reward.name]
            else:
                error = f"timed out after {self.timeout_s:g}s"
                seconds[reward.name] = self.timeout_s
            failures[reward.name] = 1
            if reward.name not in self._reported:
                self._reported.add(reward.name)
                message = _one_line(
                    f"reward function {reward.name!r} failed ({error}); its rewards count as not "
                    f"applicable (NaN) on every batch it fails, and this is reported once"
                )
                logger.warning(message, exc_info=err)  # the traceback once, in this worker's log
                new_errors.append(message)
        return ScoreResult(rows, self.names, self.weights, failures, new_errors, seconds)

    def _start(
        self,
        reward: _Reward,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        columns: Mapping[str, Sequence[Any]],
        elapsed: dict[str, float],
    ) -> concurrent.futures.Future:
        """Run one function on a fresh daemon thread; the future holds its N rewards (None: n/a)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()

        def run() -> None:
            t0 = time.perf_counter()
            try:
                # score_completions checks the result: N numbers or Nones, NaN -> None, no inf.
                (values,) = score_completions([reward.fn], prompts, completions, columns, [reward.kwargs])
            except BaseException as err:  # noqa: BLE001 - score() reports it, never swallowed
                elapsed[reward.name] = time.perf_counter() - t0
                future.set_exception(err)
            else:
                elapsed[reward.name] = time.perf_counter() - t0
                future.set_result(values)

        threading.Thread(target=run, name=f"reward-{reward.name}", daemon=True).start()
        return future

    def _check_inputs(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Sequence[Any]]
    ) -> None:
        # Caller and config mistakes raise here, once, instead of failing every function as "not applicable".
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(
                f"RewardScorer.score: {len(prompts)} prompts for {n} completions; repeat each prompt per completion"
            )
        for col, values in columns.items():
            if isinstance(values, str) or len(values) != n:
                got = "a string" if isinstance(values, str) else f"{len(values)} values"
                raise ValueError(f"RewardScorer.score: column {col!r} has {got} for {n} completions")
        for r in self.functions:
            clash = sorted(set(r.kwargs) & (set(columns) | {"prompts", "completions"}))
            if clash:
                raise ValueError(
                    f"reward function {r.name!r} ({reward_name(r.fn)}): kwargs {clash} clash with dataset columns "
                    f"of the same name; rename the kwarg in reward.functions or the column"
                )


def split_for_workers(n_rows: int, group_size: int, n_workers: int) -> list[slice]:
    """Contiguous slices of ``n_rows`` completions, whole groups of ``group_size`` in each.

    Groups are shared as evenly as possible (the first slices get one more when they do not divide);
    fewer slices than workers come back when there are fewer groups than workers, never an empty one.

    >>> split_for_workers(12, 2, 4)
    [slice(0, 4, None), slice(4, 8, None), slice(8, 10, None), slice(10, 12, None)]
    >>> split_for_workers(4, 2, 3)
    [slice(0, 2, None), slice(2, 4, None)]
    """
    if group_size < 1 or n_workers < 1:
        raise ValueError(f"split_for_workers: group_size={group_size} and n_workers={n_workers} must be >= 1")
    if n_rows % group_size:
        raise ValueError(f"split_for_workers: {n_rows} completions are not whole groups of {group_size}")
    n_groups = n_rows // group_size
    used = min(n_workers, n_groups)
    slices, start = [], 0
    for w in range(used):
        groups = n_groups // used + (1 if w < n_groups % used else 0)
        slices.append(slice(start, start + groups * group_size))
        start += groups * group_size
    return slices


def merge_score_results(results: Sequence[ScoreResult]) -> ScoreResult:
    """One result from the results of consecutive slices, in order.

    Rows are concatenated, failures summed (a count of failed shards), seconds the slowest shard's
    (shards run in parallel), and new errors kept once each, in order of first appearance.
    """
    if not results:
        raise ValueError("merge_score_results: no results to merge")
    first = results[0]
    for r in results[1:]:
        if r.names != first.names or r.weights != first.weights:
            raise ValueError(
                f"merge_score_results: reward workers disagree on functions ({first.names} vs {r.names}); "
                "every worker must be built from the same reward.functions"
            )
    rows = [row for r in results for row in r.rewards]
    failures: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for r in results:
        for name, count in r.failures.items():
            failures[name] = failures.get(name, 0) + count
        for name, s in r.seconds.items():
            seconds[name] = max(seconds.get(name, 0.0), s)
    new_errors = list(dict.fromkeys(e for r in results for e in r.new_errors))
    return ScoreResult(rows, list(first.names), list(first.weights), failures, new_errors, seconds)
