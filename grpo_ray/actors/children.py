"""Engine child processes that outlive a killed actor, and how a restarted actor clears them.

vLLM on GPU runs its engine core (and, with tensor parallelism, one worker per GPU) in child
processes of the rollout actor. When the actor is SIGKILLed (OOM killer, a test, a lost raylet
connection) those children are orphaned and keep their GPU memory, so the actor Ray restarts in the
same place fails to allocate. Two mechanisms, both on:

1. Ray's per-worker process-group cleanup (``process_group_cleanup_enabled``), which
   :func:`grpo_ray.cluster.init_ray` turns on for the clusters grpo_ray starts: when a worker dies, the
   raylet kills its whole process group. On a cluster started with ``ray start`` set
   ``RAY_process_group_cleanup_enabled=1`` on every node (docs/gpu_clusters.md says so).
2. :class:`EngineChildren`, for children that left the process group (a process that calls
   ``setsid``) or clusters without (1): once the engine has started, the actor records its
   descendants (pid and start time) in a file named after the actor's id on the node's disk; the
   next incarnation of the same actor (Ray keeps the actor id across restarts) kills whichever of
   them still run before it starts its own engine, and waits until they are gone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
from pathlib import Path

log = logging.getLogger("grpo_ray.children")


def _registry_dir() -> Path:
    return Path(os.environ.get("GRPO_RAY_RUN_DIR") or Path(tempfile.gettempdir()) / "grpo_ray" / "children")


class EngineChildren:
    """The child processes of one actor (by ``owner``: its Ray actor id), across its restarts."""

    def __init__(self, owner: str) -> None:
        self.path = _registry_dir() / f"{owner}.json"

    def record(self) -> int:
        """Write this process's descendants down; returns how many."""
        import psutil

        me = psutil.Process()
        kids = [{"pid": p.pid, "started": p.create_time()} for p in me.children(recursive=True)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(kids))
        os.replace(tmp, self.path)
        return len(kids)

    def reap(self, timeout_s: float = 30.0) -> list[int]:
        """Kill the recorded children of an earlier incarnation that still run; returns their pids."""
        import psutil

        if not self.path.is_file():
            return []
        try:
            recorded = json.loads(self.path.read_text())
        except ValueError:
            recorded = []
        me = os.getpid()
        alive = []
        for entry in recorded:
            try:
                p = psutil.Process(int(entry["pid"]))
                # the same process, not a new one that reused the pid, and not ourselves
                if p.pid != me and abs(p.create_time() - float(entry["started"])) < 1e-3:
                    alive.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
                continue
        for p in alive:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        _, still = psutil.wait_procs(alive, timeout=timeout_s)
        if still:
            log.warning("engine processes of an earlier incarnation survive SIGKILL: %s", [p.pid for p in still])
        self.path.unlink(missing_ok=True)
        if alive:
            log.warning("killed %d engine process(es) left by this actor's previous incarnation: %s",
                        len(alive), [p.pid for p in alive])
        return [p.pid for p in alive]

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
