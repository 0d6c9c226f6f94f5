"""Surviving a dead learner: a copy of every rank's trainable state, kept off the rank, and the way back.

After every step each learner rank snapshots its trainable state (``PolicyLearner.snapshot``: DeepSpeed's
own checkpoint of the step, so the adapter or weights, the optimizer and the scheduler for every ZeRO
stage, plus the rank's RNG). The snapshot is the return value of a call the driver made, so the driver
owns it and it lives in the node's object store, not in the learner's process: a SIGKILLed or
OOM-killed learner leaves it behind. The snapshot call is queued behind the step's update and weight
export on the learner, so the driver does not wait for it; its cost is reported the next step
(``learner/snapshot_seconds_max``, ``learner/snapshot_bytes``).

When a learner dies, its collective group cannot go on (the other ranks' process group is broken), so
the whole group is started again and every rank restores its snapshot of the last completed step; the
step that was interrupted is then sent again, and on CPU with a fixed seed it makes exactly the update
it would have made. When the snapshot is gone too (the node died with it), :class:`SnapshotLost`
sends the driver back to the last checkpoint, and the steps after it are done again and logged once.
"""

from __future__ import annotations

import logging
from typing import Optional

from grpo_ray.run.shards import RAY, Calls

log = logging.getLogger("grpo_ray.snapshots")


class SnapshotLost(RuntimeError):
    """The learners' snapshot could not be read back (its node is gone)."""


class LearnerSnapshots:
    def __init__(self, enabled: bool, calls: Calls = RAY) -> None:
        self.enabled, self.calls = enabled, calls
        self._meta: list = []
        self._files: list = []
        self._reported: list = []
        self.step: Optional[int] = None  # the completed step the snapshot holds

    def take(self, learners: list, step: int) -> None:
        """Queue a snapshot of every rank behind whatever the learners are doing."""
        if not self.enabled:
            return
        pairs = [learner.snapshot.remote() for learner in learners]
        self._reported = self._meta  # the previous snapshot: done by the time this one was queued
        self._meta, self._files, self.step = [m for m, _ in pairs], [f for _, f in pairs], step

    def metrics(self) -> dict[str, float]:
        """The cost of the previous snapshot (queued behind that step's export, done before this step's
        update could start); never waits."""
        if not self._reported:
            return {}
        try:
            meta = self.calls.get(self._reported, timeout=0)
        except self.calls.lost:  # not done yet, or its rank died: no number this step
            return {}
        return {"learner/snapshot_seconds_max": max(m["seconds"] for m in meta),
                "learner/snapshot_bytes": sum(m["bytes"] for m in meta)}

    def restore(self, learners: list) -> None:
        """Every (new) rank restores the snapshot; SnapshotLost when it cannot be read back."""
        if not self.enabled or not self._files:
            raise SnapshotLost("no snapshot of the learners was kept")
        try:
            files: dict[str, bytes] = {}
            for part in self.calls.get(self._files, timeout=600):
                files.update(part)
        except self.calls.lost as err:
            raise SnapshotLost(f"the learners' snapshot of step {self.step} is gone ({type(err).__name__})") from None
        self.calls.get([learner.restore.remote(files) for learner in learners])
