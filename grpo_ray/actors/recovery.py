"""Surviving a dead rollout or reward actor: its shard of the step is sent again.

Rollout and reward actors are created with ``max_restarts``: when one dies (a SIGKILL, an OOM kill, a
lost node) Ray starts it again and runs its constructor. The driver waits for it and submits the
same shard again (a rollout shard carries the adapter it is sampled with, so a restarted engine,
which holds none, loads that first; an adapter load is itself such a shard). Shards are
deterministic given their seeds and the adapter version, so the step's result is what it would have
been, and every step is done once. If an actor has used up its restarts, its shard goes to the next
live actor of the role.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import ray
from ray.exceptions import RayActorError

log = logging.getLogger("grpo_ray.recovery")


class AllWorkersDead(RuntimeError):
    """Every actor of a role is gone for good."""


def wait_until_alive(worker, timeout_s: float) -> bool:
    """True once ``worker`` answers (Ray has finished restarting it); False if it stays dead."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(worker.__ray_ready__.remote(), timeout=max(1.0, deadline - time.monotonic()))
            return True
        except RayActorError:
            time.sleep(0.5)
        except ray.exceptions.GetTimeoutError:
            return False
    return False


class PendingShards:
    """Shards submitted to a role's actors; :meth:`result` waits for them, resending any whose actor
    died. ``submit(worker, shard)`` returns the call's ObjectRef."""

    def __init__(self, role: str, workers: Sequence[Any], shards: Sequence[Any], submit: Callable[[Any, Any], Any], *,
                 restart_timeout_s: float = 600.0, max_attempts: int = 4) -> None:
        self.role, self.workers, self.shards, self.submit = role, list(workers), list(shards), submit
        self.restart_timeout_s, self.max_attempts = restart_timeout_s, max_attempts
        self.pending = {i: (i, submit(self.workers[i], shard)) for i, shard in enumerate(self.shards)}

    def result(self) -> tuple[list[Any], int]:
        """(results in shard order, shards sent again)."""
        results: list[Any] = [None] * len(self.shards)
        resent = 0
        attempts = {i: 1 for i in self.pending}
        while self.pending:
            for i, (w, ref) in list(self.pending.items()):
                try:
                    results[i] = ray.get(ref)
                    del self.pending[i]
                except RayActorError as err:
                    if attempts[i] >= self.max_attempts:
                        raise
                    log.warning("%s worker %d died during its shard (%s); sending the shard again", self.role, w,
                                str(err).splitlines()[0][:200])
                    target = _live_worker(self.workers, w, self.restart_timeout_s, self.role)
                    attempts[i] += 1
                    resent += 1
                    self.pending[i] = (target, self.submit(self.workers[target], self.shards[i]))
        return results, resent


def run_shards(role: str, workers: Sequence[Any], shards: Sequence[Any], submit: Callable[[Any, Any], Any],
               **kwargs) -> tuple[list[Any], int]:
    """Submit and wait: :class:`PendingShards` ``(...).result()``."""
    return PendingShards(role, workers, shards, submit, **kwargs).result()


def _live_worker(workers, start: int, timeout_s: float, role: str) -> int:
    for offset in range(len(workers)):
        j = (start + offset) % len(workers)
        if wait_until_alive(workers[j], timeout_s if offset == 0 else 5.0):
            return j
    raise AllWorkersDead(f"every {role} worker is dead and out of restarts")
