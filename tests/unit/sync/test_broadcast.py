"""The broadcast strategy on its own: bucket packing, and a real gloo group of three members (learner
rank 0 and two rollout workers, on threads of this process) moving a version into stand-in engines.
Through Ray actors, with a worker killed and restarted: tests/integration/test_adapter_sync.py."""

from __future__ import annotations

import pickle
import socket
import threading

import pytest
import torch

from grpo_ray.sync import BroadcastSync, SyncTopology
from grpo_ray.sync.broadcast import BroadcastWeights, VersionGone, buckets_of, pack, unpack
from grpo_ray.wire import FullWeights, WeightsHandle

pytestmark = pytest.mark.unit


def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(7, 5, generator=g),
        "norm.weight": torch.randn(5, generator=g).to(torch.bfloat16),
        "head.weight": torch.randn(3, 5, generator=g).to(torch.float16),
        "step": torch.tensor([3], dtype=torch.int64),
    }


class Learner:
    def __init__(self, rank: int, weights: dict[str, torch.Tensor]) -> None:
        self.rank, self.weights = rank, weights

    def full_state(self):
        if self.rank == 0:
            yield from ((n, t.clone()) for n, t in self.weights.items())


class Engine:
    version = -1

    def __init__(self) -> None:
        self.weights, self.buckets = {}, 0

    def load_weights(self, buckets):
        for bucket in buckets:
            self.buckets += 1
            self.weights.update({n: t.clone() for n, t in bucket.items()})


def test_a_packed_bucket_unpacks_to_views_of_one_buffer_with_every_dtype() -> None:
    layout, flat = pack(state())
    payload = sum(t.numel() * t.element_size() for t in state().values())
    assert flat.dtype == torch.uint8 and payload <= flat.numel() < payload + 16 * len(state())
    out = unpack(layout, flat)
    for name, tensor in state().items():
        assert out[name].dtype == tensor.dtype and torch.equal(out[name], tensor)
        assert out[name].untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()  # a view, not a copy


def test_buckets_keep_to_their_size_and_skip_what_other_ranks_yield() -> None:
    pairs = [("a", torch.zeros(16)), ("b", None), ("c", torch.zeros(16)), ("d", torch.zeros(40)), ("e", torch.zeros(1))]
    sizes = [[n for n in b] for b in buckets_of(pairs, bucket_bytes=130)]
    assert sizes == [["a", "c"], ["d"], ["e"]]  # 64 + 64 bytes; 160 alone; 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect_all(num_rollouts: int, learners=()) -> tuple[BroadcastSync, list[BroadcastSync]]:
    topology = SyncTopology(1, num_rollouts, ("127.0.0.1", free_port()), learners)
    sender, receivers = BroadcastSync(bucket_bytes=100, timeout_s=20), [BroadcastSync(timeout_s=20) for _ in range(num_rollouts)]
    threads = [threading.Thread(target=sender.connect, args=("learner", 0, topology))]
    threads += [threading.Thread(target=r.connect, args=("rollout", i, topology)) for i, r in enumerate(receivers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sender.connected and all(r.connected for r in receivers)
    return sender, receivers


def test_a_live_version_reaches_every_worker_over_the_group_and_nothing_goes_to_the_store() -> None:
    sender, receivers = connect_all(2, learners=("rank0",))
    engines = [Engine() for _ in receivers]
    put_calls = []
    handle = WeightsHandle(5, "ref", "line", "broadcast")
    threads = [threading.Thread(target=r.receive, args=(e, handle, None), kwargs={"live": True})
               for r, e in zip(receivers, engines)]
    for t in threads:
        t.start()
    update = sender.send(Learner(0, state()), 5, put_calls.append, live=True)
    for t in threads:
        t.join(timeout=30)
    assert put_calls == []  # the object store saw nothing
    assert isinstance(update, BroadcastWeights) and update.complete and update.version == 5
    assert update.learners == ("rank0",) and update.total_bytes >= sum(t.numel() * t.element_size() for t in state().values())
    for engine in engines:
        assert engine.version == 5 and engine.buckets == 2  # streamed bucket by bucket (140 bytes, then 48)
        assert engine.weights.keys() == state().keys()
        assert all(torch.equal(engine.weights[n], t) for n, t in state().items())
    for s in [sender, *receivers]:
        s.close()


def test_a_worker_that_missed_the_broadcast_gets_the_version_from_the_learners_through_the_store() -> None:
    """A restarted worker (no group) asks every learner rank to put the version it names in the store."""
    store = []
    learners = [Learner(0, state()), Learner(1, state())]
    syncs = [BroadcastSync(bucket_bytes=200) for _ in learners]
    for sync, learner in zip(syncs, learners):
        sync.send(learner, 9, store.append)  # not live: the update goes through the store (async mode)
    store.clear()

    class Remote:  # a learner actor's store_weights, as the worker calls it
        def __init__(self, sync, learner):
            self.store_weights = type("M", (), {"remote": staticmethod(lambda v: sync.store(learner, v, put))})()

    def put(obj):
        store.append(pickle.dumps(obj, protocol=5))
        return len(store) - 1

    remotes = tuple(Remote(s, lrn) for s, lrn in zip(syncs, learners))

    def fetch(ref):  # ray.get: a list of refs, a ref to a bucket, or what a remote call returned
        if isinstance(ref, list):
            return [fetch(r) for r in ref]
        return pickle.loads(store[ref]) if isinstance(ref, int) else ref

    engine = Engine()
    worker = BroadcastSync()
    worker.apply(engine, BroadcastWeights(9, 0, remotes), fetch)
    assert engine.version == 9 and all(torch.equal(engine.weights[n], t) for n, t in state().items())
    with pytest.raises(VersionGone, match="hold version 9, not 8"):
        syncs[0].store(learners[0], 8, put)


def test_without_live_the_sender_uses_the_store_like_full() -> None:
    store = []
    update = BroadcastSync(bucket_bytes=100).send(Learner(0, state()), 2, lambda obj: store.append(obj) or len(store) - 1)
    assert isinstance(update, FullWeights) and update.version == 2 and len(store) == len(update.buckets) >= 2
