"""Adapter-only weight sync: learner rank 0's LoRA tensors to every rollout worker.

The payload goes into the Ray object store once and each rollout worker pulls it to its own node,
so nothing assumes a shared filesystem. Every learner rank is asked, because under ZeRO-3 the
tensors are gathered collectively; only rank 0 returns them.
"""

from __future__ import annotations

import time

import ray


def sync_adapter(learners: list, rollouts: list, version: int) -> dict[str, float]:
    """Publish adapter ``version`` to ``rollouts``; returns timing metrics."""
    start = time.perf_counter()
    refs = [learner.adapter_payload.remote(version) for learner in learners]
    ray.get(refs[1:])  # the other ranks only take part in the gather
    payload = refs[0]  # passed as a ref: resolved inside each worker, fetched once per node
    load_seconds = ray.get([worker.load_adapter.remote(payload) for worker in rollouts])
    return {
        "timing/sync_total": time.perf_counter() - start,
        "sync/load_seconds_max": max(load_seconds) if load_seconds else 0.0,
    }
