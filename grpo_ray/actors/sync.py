"""Adapter-only weight sync: learner rank 0's LoRA tensors to every rollout worker.

The payload goes into the Ray object store once and each rollout worker pulls it to its own node,
so nothing assumes a shared filesystem. Every learner rank is asked, because under ZeRO-3 the
tensors are gathered collectively; only rank 0 returns them.

Two halves: :func:`publish_adapter` puts version v in the object store and returns its ref;
:func:`load_adapter` has rollout workers load it now (the synchronous step waits for that). Every
generation shard also carries the ref of the adapter it must be sampled with, and a worker holding
another version loads it first: a restarted worker thus gets its shard's adapter with the shard,
and in one-step-off async mode the load runs on the rollout worker while the learner updates.
"""

from __future__ import annotations

import time

import ray

from grpo_ray.actors.recovery import run_shards


def publish_adapter(learners: list, version: int):
    """Adapter ``version`` into the object store; returns its ref without waiting for the tensors."""
    refs = [learner.adapter_payload.remote(version) for learner in learners]
    ray.get(refs[1:])  # the other ranks only take part in the gather
    return refs[0]  # passed as a ref: resolved inside each worker, fetched once per node


def load_adapter(rollouts: list, payload_ref, **recovery) -> tuple[float, int]:
    """Every rollout worker loads ``payload_ref`` now (a worker that dies meanwhile gets it again
    after its restart). Returns (the slowest worker's load seconds, loads sent again)."""
    shards = [payload_ref] * len(rollouts)
    load_seconds, resent = run_shards("rollout", rollouts, shards, lambda w, ref: w.load_adapter.remote(ref), **recovery)
    return max(load_seconds, default=0.0), resent


def sync_adapter(learners: list, rollouts: list, version: int):
    """Publish adapter ``version`` and wait until every rollout worker has loaded it.
    Returns (its ref, timing metrics, loads sent again)."""
    start = time.perf_counter()
    ref = publish_adapter(learners, version)
    load_seconds, resent = load_adapter(rollouts, ref)
    return ref, {"timing/sync_total": time.perf_counter() - start, "sync/load_seconds_max": load_seconds}, resent
