"""Work spread over a role's actors, surviving their deaths: a shard whose actor died is sent again.

Rollout and reward actors are created with ``max_restarts``: when one dies (a SIGKILL, an OOM kill, a
lost node) Ray starts it again and runs its constructor. :class:`PendingShards` waits for it and
submits the same shard again (a rollout shard carries the weights it is sampled with, so a restarted
engine, which holds none, loads them first; a weights load is itself such a shard). Shards are
deterministic given their seeds and the weights version, so the step's result is what it would have
been, and every step is done once. If an actor has used up its restarts, its shard goes to the next
live actor of the role.

The driver reaches actors only through :class:`Calls` (``ray.get`` and the one liveness probe), so the
coordination in ``grpo_ray.run`` is unit-tested with fake actors and no Ray (``tests/unit/run/fakes.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Sequence

log = logging.getLogger("grpo_ray.shards")

ROLES = ("rollout", "reward", "learner")


class AllWorkersDead(RuntimeError):
    """Every actor of a role is gone for good."""


class Calls:
    """How the driver waits on its actors. :data:`RAY` in a run; a fake in unit tests."""

    #: the exceptions that mean "the actor died while running the call"
    died: tuple[type[BaseException], ...] = ()
    #: the exceptions that mean "that result can no longer be had" (its actor, owner or node is gone, or
    #: it did not come within the timeout)
    lost: tuple[type[BaseException], ...] = ()
    #: any failure of a remote call (its actor died, or the call raised)
    failed: tuple[type[BaseException], ...] = ()

    def get(self, ref: Any, timeout: Optional[float] = None) -> Any:
        raise NotImplementedError

    def answers(self, actor: Any, timeout_s: float) -> bool:
        """The liveness probe: True when ``actor`` answers within ``timeout_s``."""
        raise NotImplementedError

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class RayCalls(Calls):
    def __init__(self) -> None:
        from ray import exceptions as e

        self.died = (e.RayActorError,)
        self.lost = (e.ObjectLostError, e.OwnerDiedError, e.RayTaskError, e.RayActorError, e.GetTimeoutError)
        self.failed = (e.RayError,)

    def get(self, ref, timeout=None):
        import ray

        return ray.get(ref, timeout=timeout)

    def answers(self, actor, timeout_s):
        import ray

        try:
            ray.get(actor.__ray_ready__.remote(), timeout=timeout_s)
            return True
        # a task error: the actor answers but cannot serve this run (a restarted shared learner without its slot)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, ray.exceptions.RayTaskError):
            return False


class _LazyRay(Calls):
    """:class:`RayCalls`, made on first use (importing this module does not import Ray)."""

    _calls: Optional[RayCalls] = None

    def _ray(self) -> RayCalls:
        if self._calls is None:
            self._calls = RayCalls()
        return self._calls

    @property
    def died(self):  # type: ignore[override]
        return self._ray().died

    @property
    def lost(self):  # type: ignore[override]
        return self._ray().lost

    @property
    def failed(self):  # type: ignore[override]
        return self._ray().failed

    def get(self, ref, timeout=None):
        return self._ray().get(ref, timeout)

    def answers(self, actor, timeout_s):
        return self._ray().answers(actor, timeout_s)


RAY: Calls = _LazyRay()


def wait_until_alive(worker: Any, timeout_s: float, calls: Calls = RAY) -> bool:
    """True once ``worker`` answers again (Ray has finished restarting it); False if it stays dead."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if calls.answers(worker, max(1.0, min(30.0, deadline - time.monotonic()))):
            return True
        calls.sleep(0.5)
    return False


def dead_actors(actors: Sequence[Any], calls: Calls = RAY, timeout_s: float = 5.0) -> list[int]:
    """Indices of the actors that no longer answer."""
    return [i for i, actor in enumerate(actors) if not calls.answers(actor, timeout_s)]


class FaultCounter:
    """Shards (and learner updates) sent again after their actor died, per role."""

    def __init__(self) -> None:
        self.total = dict.fromkeys(ROLES, 0)
        self._reported = dict(self.total)

    def add(self, role: str, count: int = 1) -> None:
        self.total[role] += count

    def step_metrics(self) -> dict[str, float]:
        """Resent since the last call, and since this process started."""
        out = {}
        for role, total in self.total.items():
            out[f"faults/{role}_shards_resent"] = float(total - self._reported[role])
            out[f"faults/{role}_shards_resent_total"] = float(total)
        self._reported = dict(self.total)
        return out


class PendingShards:
    """Shards submitted to a role's actors; :meth:`result` waits for them, resending any whose actor
    died. ``submit(worker, shard)`` returns the call's ref. Resends are counted in ``faults``."""

    def __init__(self, role: str, workers: Sequence[Any], shards: Sequence[Any], submit: Callable[[Any, Any], Any], *,
                 calls: Calls = RAY, faults: Optional[FaultCounter] = None, restart_timeout_s: float = 600.0,
                 max_attempts: int = 4) -> None:
        if len(shards) > len(workers):
            raise ValueError(f"{len(shards)} {role} shards for {len(workers)} workers")
        self.role, self.workers, self.shards, self.submit = role, list(workers), list(shards), submit
        self.calls, self.faults = calls, faults
        self.restart_timeout_s, self.max_attempts = restart_timeout_s, max_attempts
        self.resent = 0
        self._pending = {i: (i, submit(self.workers[i], shard)) for i, shard in enumerate(self.shards)}
        self._results: list[Any] = [None] * len(self.shards)

    def result(self) -> list[Any]:
        """The results in shard order (waits; resends shards whose actor died)."""
        attempts = {i: 1 for i in self._pending}
        while self._pending:
            for i, (w, ref) in list(self._pending.items()):
                try:
                    self._results[i] = self.calls.get(ref)
                    del self._pending[i]
                except self.calls.died as err:
                    if attempts[i] >= self.max_attempts:
                        raise
                    log.warning("%s worker %d died during its shard (%s); sending the shard again", self.role, w,
                                str(err).splitlines()[0][:200] if str(err) else type(err).__name__)
                    target = self._live_worker(w)
                    attempts[i] += 1
                    self.resent += 1
                    if self.faults is not None:
                        self.faults.add(self.role)
                    self._pending[i] = (target, self.submit(self.workers[target], self.shards[i]))
        return list(self._results)

    def _live_worker(self, start: int) -> int:
        for offset in range(len(self.workers)):
            j = (start + offset) % len(self.workers)
            if wait_until_alive(self.workers[j], self.restart_timeout_s if offset == 0 else 5.0, self.calls):
                return j
        raise AllWorkersDead(f"every {self.role} worker is dead and out of restarts")
