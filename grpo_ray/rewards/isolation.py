"""One reward function in a child process of its own, which the reward worker can kill and replace.

The mechanism (a child started with two pipes, user code shipped by value, a parent that never
blocks, a child that dies with its parent) is :mod:`grpo_ray.utils.isolation`'s, which tools run in
too. Here is what a reward child does with it: warm the function up (``fn.warmup``), then score one
batch a message. The batch is pickled once per batch and the same bytes go to every child
(:func:`pack_batch`), so F process-run functions cost one pickle and F unpickles of the batch.
"""

from __future__ import annotations

import pickle
import time
from typing import Any, Mapping, Sequence

from grpo_ray.utils.isolation import IsolatedProcess, RemoteError, describe, receive_until

RewardProcessError = RemoteError  # an error raised in a reward process (its type name, message, traceback)

__all__ = ["RewardProcess", "RewardProcessError", "pack_batch", "receive_until"]


def pack_batch(prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Sequence[Any]]) -> bytes:
    """The bytes every reward process gets for one batch: plain lists, pickled once.

    >>> pickle.loads(pack_batch(("q",), ["c"], {"answer": ("4",)}))
    (['q'], ['c'], {'answer': ['4']})
    """
    return pickle.dumps((list(prompts), list(completions), {k: list(v) for k, v in columns.items()}), protocol=5)


class RewardProcess(IsolatedProcess):
    """A child process running one reward function; ``state`` and the messages as in
    :class:`~grpo_ray.utils.isolation.IsolatedProcess`.

    Args:
        name: the reward's display name (thread and log names).
        fn: the reward function; it must pickle with cloudpickle (closures over locks do not).
        kwargs: its settings, passed to every call and (those it accepts) to ``fn.warmup``.
    """

    def __init__(self, name: str, fn: Any, kwargs: Mapping[str, Any], *, kill_grace_s: float = 1.0) -> None:
        super().__init__(name, (fn, dict(kwargs)), "grpo_ray.rewards.isolation:reward_child", kill_grace_s=kill_grace_s,
                         kind="reward")


def reward_child(setup, receive, answer) -> None:
    """The child's side: warm the function up, then score each batch it is sent until the pipe closes."""
    from grpo_ray.rewards.registry import score_completions, warm_up

    try:
        fn, kwargs = setup
        start = time.perf_counter()
        warm_up(fn, kwargs)
    except BaseException as err:  # noqa: BLE001 - sent to the parent, which reports it
        answer("failed", *describe(err))
        return
    answer("ready", time.perf_counter() - start)
    while (batch := receive()) is not None:
        start = time.perf_counter()
        try:
            prompts, completions, columns = batch
            (values,) = score_completions([fn], prompts, completions, columns, [kwargs])
        except BaseException as err:  # noqa: BLE001 - sent to the parent, which reports it
            answer("error", *describe(err), time.perf_counter() - start)
        else:
            answer("ok", values, time.perf_counter() - start)
