"""Turns: the unit a multi-turn rollout asks an engine for, and the loop that keeps episodes independent.

A :class:`Turn` is one sampled reply: token ids in (the episode so far), token ids and their logprobs
out. A multi-turn rollout kind hands the engine every episode's first turn and a callback; each time
a turn finishes, the callback says what that episode does next: another turn now, a
:class:`~concurrent.futures.Future` of one (its tools are running), or nothing (it is done). An
episode never waits for another's turn: the engine keeps sampling the others while a tool runs.

:func:`drive_turns` is that loop for an engine that samples batches of turns (``sample``); vLLM's
engine overrides it with its own continuous batching, adding each turn the moment it is known.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union


@dataclass
class Turn:
    key: Any  # which episode
    prompt_ids: list[int]  # the episode so far
    max_tokens: int
    seed: Optional[int] = None


@dataclass
class TurnOutput:
    key: Any
    token_ids: list[int]  # as sampled, the end-of-turn token included when the turn ended with it
    logprobs: list[float]  # [len(token_ids)] under the sampler
    finish_reason: str  # "stop" or "length"
    versions: Optional[list[int]] = None  # [len(token_ids)] the weights version of each token (in-flight updates)


Next = Union[Turn, "Future[Optional[Turn]]", None]
OnDone = Callable[[TurnOutput], Next]


class TurnQueue:
    """The turns to sample and the futures to wait for, fed by the callback."""

    def __init__(self, first: list[Turn]) -> None:
        self.ready: list[Turn] = list(first)
        self.waiting: set[Future] = set()

    def add(self, nxt: Next) -> None:
        if isinstance(nxt, Turn):
            self.ready.append(nxt)
        elif nxt is not None:
            self.waiting.add(nxt)

    def collect(self, block: bool) -> None:
        """Move finished futures' turns to ``ready`` (waiting for one when ``block``)."""
        if not self.waiting:
            return
        done, self.waiting = wait(self.waiting, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in done:
            self.add(future.result())  # a tool thread's failure is a bug: raise it here

    def __bool__(self) -> bool:
        return bool(self.ready or self.waiting)


def drive_turns(sample: Callable[[list[Turn]], list[TurnOutput]], first: list[Turn], on_done: OnDone) -> float:
    """Sample ``first`` and every turn ``on_done`` asks for, in batches of what is ready; returns the
    seconds spent sampling."""
    queue, sampling_s = TurnQueue(first), 0.0
    while queue:
        queue.collect(block=not queue.ready)
        if not queue.ready:
            continue
        batch, queue.ready = queue.ready, []
        start = time.perf_counter()
        outputs = sample(batch)
        sampling_s += time.perf_counter() - start
        for out in outputs:
            queue.add(on_done(out))
    return sampling_s
