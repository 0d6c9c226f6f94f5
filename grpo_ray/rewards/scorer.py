"""Scoring one batch with every reward function at once, under a timeout that really stops them.

``RewardScorer`` is what a ``RewardWorker`` actor wraps; it needs no Ray, so it is tested (and can be
used) in a plain process. All functions of a batch run at once and share one deadline, ``timeout_s``
after the batch starts. A function that raises, returns something that is not one number-or-None per
completion, misses the deadline, or whose warm-up failed is "not applicable" for the whole batch: its
column is NaN (which ``combine_rewards`` skips), the batch's ``failures`` counts it, and its error is
reported once per scorer lifetime rather than once per batch.

Where each function runs is ``isolation``:

- ``"process"``: in a long-lived child process of its own (:mod:`grpo_ray.rewards.isolation`),
  shipped there by value. One that misses the deadline is killed with its process (SIGTERM, then
  SIGKILL after ``kill_grace_s``) and a fresh process starts at once for the next batch: a busy loop
  burns no core after its timeout, and nothing piles up batch after batch. The price is one pickle of
  the batch per batch and one unpickle per function (bench/reward_isolation.py measures it), and the
  function must pickle with cloudpickle (one that does not fails every batch, saying so).
- ``"thread"``: on a fresh daemon thread of this process per batch. Cheapest, and functions that
  wait on I/O or release the GIL overlap; but a thread cannot be killed: one that misses the deadline
  runs on until its function returns (its late result is thrown away), so a function that hangs on
  every batch leaks a thread per batch, and a busy loop keeps a core busy.
- ``"auto"`` (the default): built-ins registered as pure and fast (``RewardTraits.in_process``: the
  format, correctness and length rewards) on threads, everything else (``module:function``,
  ``file.py:function``, ``semantic_similarity``) in processes.

Rewards that score through the run's judge actor (``RewardTraits.judge``) always run on a thread: a
child process holds no Ray connection, and they only wait, with their own timeout on the actor call.

Warm-up: a function's optional ``fn.warmup(**settings)`` runs once in every process that runs it: for
threads when the scorer is built, for a child process as it starts (the replacement after a kill
too). It runs outside the batch deadline, within ``warmup_timeout_s``. A warm-up that raises, or
misses that limit, leaves its function failing (NaN) on every batch, reported once.

What it cannot do: stop a function that runs on a thread; bound a child process's memory; or keep a
process-run function's state (module globals, caches) across the restart that follows a timeout.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from grpo_ray.rewards.isolation import RewardProcess, RewardProcessError, pack_batch, receive_until
from grpo_ray.rewards.registry import (
    REWARDS,
    RewardFn,
    accepts_kwarg,
    display_name,
    resolve_reward,
    reward_name,
    score_completions,
    warm_up,
    warmup_of,
)

logger = logging.getLogger("grpo_ray.rewards")

ISOLATIONS = ("auto", "process", "thread")  # reward.isolation's choices; config.py spells them as a Literal
_MAX_ERROR_CHARS = 300


@dataclass
class ScoreResult:
    """Rewards for N completions from F reward functions.

    Attributes:
        rewards: [N][F] floats, NaN where a function does not apply or failed; the input of
            ``grpo_ray.algo.combine_rewards`` once made a tensor.
        names: F display names, the keys of the ``rewards/<name>/...`` metrics: the config's name with
            no folders or slashes (``/home/me/my_rewards.py:brevity`` -> ``my_rewards.brevity``, see
            ``display_name``), made unique with ``#2``, ``#3``... when two coincide.
        weights: F weights, in the same order.
        failures: per name, how many batches (shards, after merging) the function failed on.
        new_errors: one line per function whose first failure this is in the scorer's lifetime.
        seconds: per name, wall time of the function on this batch (the timeout if it missed it).
        specs: F reward specs as the config gives them (unique with ``#2``... like the names).
    """

    rewards: list[list[float]]
    names: list[str]
    weights: list[float]
    failures: dict[str, int] = field(default_factory=dict)
    new_errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    specs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Reward:
    name: str  # display name, unique
    spec: str  # the config's name, unique
    fn: RewardFn
    weight: float
    kwargs: Mapping[str, Any]
    isolated: bool  # runs in a RewardProcess


@dataclass(frozen=True)
class _Failure:
    """Why a function has no rewards for a batch."""

    text: str  # one line: "ZeroDivisionError: division by zero", "timed out after 2s"
    exc: Optional[BaseException] = None  # a local exception: logged once with its traceback
    remote_traceback: str = ""  # the traceback a reward process sent

    @classmethod
    def of(cls, err: BaseException, prefix: str = "") -> "_Failure":
        if isinstance(err, RewardProcessError):
            return cls(prefix + err.describe(), remote_traceback=err.remote_traceback)
        return cls(f"{prefix}{type(err).__name__}: {err}", exc=err)


_Outcome = tuple[Optional[list], Optional[_Failure], float]  # (N values or None, failure, seconds)


def resolve_specs(functions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of reward specs with ``"fn"`` set to the resolved function.

    The driver calls this before creating reward actors: a ``path/file.py:function`` spec is then
    shipped to the actor by value (cloudpickle), so workers on other nodes need not have the file,
    and a bad spec fails once, in the driver, with its one-line message.
    """
    return [{**spec, "fn": resolve_reward(spec.get("fn") or spec["name"])} for spec in functions]


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


def _isolated(isolation: str, fn: RewardFn) -> bool:
    traits = REWARDS.traits(fn)
    if traits.judge or isolation == "thread":
        return False
    return isolation == "process" or not traits.in_process


def _in_thread(name: str, call: Callable[[], Any], elapsed: dict[str, float]) -> concurrent.futures.Future:
    """Run ``call`` on a fresh daemon thread; the future holds its result, ``elapsed[name]`` its time."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_running_or_notify_cancel()

    def run() -> None:
        t0 = time.perf_counter()
        try:
            value = call()
        except BaseException as err:  # noqa: BLE001 - the scorer reports it, never swallowed
            elapsed[name] = time.perf_counter() - t0
            future.set_exception(err)
        else:
            elapsed[name] = time.perf_counter() - t0
            future.set_result(value)

    threading.Thread(target=run, name=f"reward-{name}", daemon=True).start()
    return future


def _stop_all(processes: Sequence[RewardProcess]) -> None:
    for proc in processes:
        proc.stop()


class RewardScorer:
    """Runs F reward functions concurrently on a batch; see the module docstring.

    Args:
        functions: specs as ``RewardFunctionConfig.model_dump()`` gives them (``name``, ``weight``,
            ``kwargs``), optionally with ``fn`` already resolved (see :func:`resolve_specs`).
        tag_style: passed to every function as ``tag_style=`` unless its own kwargs set it or its
            signature takes neither ``tag_style`` nor ``**kwargs``.
        timeout_s: deadline for the whole batch, shared by all functions, counted from its start.
        isolation: ``"auto"``, ``"process"`` or ``"thread"``: where functions run (module docstring).
        warmup_timeout_s: how long a function's warm-up may take, per process that runs it.
        kill_grace_s: between SIGTERM and SIGKILL of a reward process that missed the deadline.

    The scorer starts its reward processes and waits for their warm-ups before it returns; call
    :meth:`close` (or use it as a context manager) to stop them; they also stop when it is
    garbage-collected and when this process dies.
    """

    def __init__(
        self,
        functions: Sequence[Mapping[str, Any]],
        tag_style: str,
        timeout_s: float,
        *,
        isolation: str = "auto",
        warmup_timeout_s: float = 600.0,
        kill_grace_s: float = 1.0,
    ) -> None:
        if not functions:
            raise ValueError("RewardScorer needs at least one reward function (reward.functions is empty)")
        if timeout_s <= 0:
            raise ValueError(f"reward.timeout_s={timeout_s}: must be positive")
        if isolation not in ISOLATIONS:
            raise ValueError(f"reward.isolation={isolation!r}: must be one of {', '.join(ISOLATIONS)}")
        self.timeout_s, self.warmup_timeout_s = float(timeout_s), float(warmup_timeout_s)
        specs = _unique_names([str(spec["name"]) for spec in functions])
        names = _unique_names([display_name(str(spec["name"])) for spec in functions])
        self.functions: list[_Reward] = []  # in config order
        for name, spec_name, spec in zip(names, specs, functions):
            fn = resolve_reward(spec.get("fn") or spec["name"])
            kwargs = dict(spec.get("kwargs") or {})
            if "tag_style" not in kwargs and accepts_kwarg(fn, "tag_style"):
                kwargs["tag_style"] = tag_style
            reward = _Reward(name, spec_name, fn, float(spec.get("weight", 1.0)), kwargs, _isolated(isolation, fn))
            self.functions.append(reward)
        self._reported: set[str] = set()  # names whose first error was already reported
        self._broken: dict[str, _Failure] = {}  # names that fail every batch (their warm-up failed)
        self.processes: dict[str, RewardProcess] = {}  # name -> its process, for process-run functions
        for r in self.functions:
            if not r.isolated:
                continue
            try:
                self.processes[r.name] = RewardProcess(r.name, r.fn, r.kwargs, kill_grace_s=kill_grace_s)
            except Exception as err:  # noqa: BLE001 - cloudpickle's errors vary; reported on the first batch
                self._broken[r.name] = _Failure(
                    f"cannot be sent to a reward process ({type(err).__name__}: {err}); make it picklable "
                    f"or set reward.isolation=thread", exc=err,
                )
        self._finalizer = weakref.finalize(self, _stop_all, list(self.processes.values()))
        self._warm_up_threads()
        self.wait_ready()

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.functions]

    @property
    def specs(self) -> list[str]:
        return [r.spec for r in self.functions]

    @property
    def weights(self) -> list[float]:
        return [r.weight for r in self.functions]

    def close(self) -> None:
        """Stop every reward process (idempotent)."""
        self._finalizer()

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- one batch --------------------------------------------------------------------------------
    def score(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Sequence[Any]]
    ) -> ScoreResult:
        """Rewards [N][F] for N completions (prompts repeated per completion, columns of length N)."""
        self._check_inputs(prompts, completions, columns)
        self.wait_ready()  # last batch's replacements finish warming up: outside the deadline
        deadline = time.monotonic() + self.timeout_s  # one deadline for the whole batch
        elapsed: dict[str, float] = {}  # written by each thread before it completes its future
        futures = {
            r.name: _in_thread(
                r.name, lambda r=r: score_completions([r.fn], prompts, completions, columns, [r.kwargs])[0], elapsed
            )
            for r in self.functions
            if not r.isolated and r.name not in self._broken
        }
        outcomes: dict[str, _Outcome] = {name: (None, failure, 0.0) for name, failure in self._broken.items()}
        late = self._run_processes(prompts, completions, columns, deadline, outcomes)
        concurrent.futures.wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        for name, future in futures.items():
            done = future.done()  # read once: a late thread may finish while we look
            err = future.exception() if done else None
            if done and err is None:
                outcomes[name] = (future.result(), None, elapsed[name])
            elif done:
                outcomes[name] = (None, _Failure.of(err), elapsed[name])
            else:
                outcomes[name] = (None, _Failure(f"timed out after {self.timeout_s:g}s"), self.timeout_s)
        for proc in late:  # killed now, replaced at once: the replacement warms up during the rest of the step
            proc.start()
        return self._result(len(completions), outcomes)

    def _run_processes(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        columns: Mapping[str, Sequence[Any]],
        deadline: float,
        outcomes: dict[str, _Outcome],
    ) -> list[RewardProcess]:
        """Send the batch to every live reward process and fill ``outcomes`` with their answers by
        ``deadline``; returns the processes that missed it, already stopped."""
        live = [p for name, p in self.processes.items() if name not in self._broken]
        if not live:
            return []
        batch = pack_batch(prompts, completions, columns)
        start = time.monotonic()
        sent = []
        for proc in live:
            if proc.send(batch):
                sent.append(proc)
            else:
                outcomes[proc.name] = (None, _Failure(proc.read()[1]), 0.0)  # it died since the last batch
                proc.stop()
        answers = receive_until(sent, deadline)
        late = []
        for proc in sent:
            message = answers.get(proc)
            if message is None:
                outcomes[proc.name] = (None, _Failure(f"timed out after {self.timeout_s:g}s"), self.timeout_s)
                late.append(proc)
            elif message[0] == "ok":
                outcomes[proc.name] = (message[1], None, message[2])
            elif message[0] == "error":
                outcomes[proc.name] = (None, _Failure.of(RewardProcessError(*message[1:4])), message[4])
            else:  # "died": restarted (and warmed up) before the next batch
                outcomes[proc.name] = (None, _Failure(message[1]), time.monotonic() - start)
                proc.stop()
        for proc in late:
            proc.stop()
        return late

    def _result(self, n: int, outcomes: Mapping[str, _Outcome]) -> ScoreResult:
        rows = [[math.nan] * len(self.functions) for _ in range(n)]
        failures: dict[str, int] = {}
        new_errors: list[str] = []
        seconds: dict[str, float] = {}
        for col, reward in enumerate(self.functions):
            values, failure, seconds[reward.name] = outcomes[reward.name]
            if failure is None:
                for i, value in enumerate(values):
                    rows[i][col] = math.nan if value is None else value
                continue
            failures[reward.name] = 1
            if reward.name not in self._reported:
                self._reported.add(reward.name)
                new_errors.append(self._report(reward, failure))
        return ScoreResult(rows, self.names, self.weights, failures, new_errors, seconds, self.specs)

    def _report(self, reward: _Reward, failure: _Failure) -> str:
        label = repr(reward.name) if reward.name == reward.spec else f"{reward.name!r} ({reward.spec})"
        message = _one_line(
            f"reward function {label} failed ({failure.text}); its rewards count as not applicable (NaN) on "
            f"every batch it fails, and this is reported once"
        )
        if failure.remote_traceback:  # the traceback once, in this worker's log
            logger.warning("%s\n%s", message, failure.remote_traceback.rstrip())
        else:
            logger.warning(message, exc_info=failure.exc)
        return message

    # -- warm-ups ---------------------------------------------------------------------------------
    def _warm_up_threads(self) -> None:
        """Run the warm-ups of thread-run functions here, all at once, before the first batch."""
        elapsed: dict[str, float] = {}
        futures = {
            r.name: _in_thread(f"{r.name}-warmup", lambda r=r: warm_up(r.fn, r.kwargs), elapsed)
            for r in self.functions
            if not r.isolated and warmup_of(r.fn) is not None
        }
        if not futures:
            return
        concurrent.futures.wait(futures.values(), timeout=self.warmup_timeout_s)
        for name, future in futures.items():
            if not future.done():
                self._broken[name] = _Failure(f"warm-up took longer than reward.warmup_timeout_s={self.warmup_timeout_s:g}s")
            elif future.exception() is not None:
                self._broken[name] = _Failure.of(future.exception(), "warm-up: ")

    def wait_ready(self) -> None:
        """Start the reward processes that have none (the replacements of killed ones) and wait for
        their warm-ups; :meth:`score` does this first, before its deadline starts."""
        for name, proc in self.processes.items():
            if name not in self._broken and proc.state == "stopped":
                proc.start()
        warming = [p for p in self.processes.values() if p.state == "warming"]
        answers = receive_until(warming, time.monotonic() + self.warmup_timeout_s)
        for proc in warming:
            message = answers.get(proc)
            if message is not None and message[0] == "ready":
                continue
            if message is None:
                failure = _Failure(f"warm-up took longer than reward.warmup_timeout_s={self.warmup_timeout_s:g}s")
            elif message[0] == "failed":
                failure = _Failure.of(RewardProcessError(*message[1:4]), "warm-up: ")
            else:
                failure = _Failure(f"warm-up: {message[1]}")
            proc.stop()
            self._broken[proc.name] = failure

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


def merge_score_results(results: Sequence[ScoreResult]) -> ScoreResult:
    """One result from the results of consecutive slices, in order.

    Rows are concatenated, failures summed (a count of failed shards), seconds the slowest shard's
    (shards run in parallel), and new errors kept once each, in order of first appearance.
    """
    if not results:
        raise ValueError("merge_score_results: no results to merge")
    first = results[0]
    for r in results[1:]:
        if r.names != first.names or r.weights != first.weights or r.specs != first.specs:
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
    return ScoreResult(rows, list(first.names), list(first.weights), failures, new_errors, seconds, list(first.specs))
