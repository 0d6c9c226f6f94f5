"""Full weights broadcast from learner rank 0 into the rollout workers over a process group of their own.

The object-store strategy (``full``) moves every weight through Ray's object store: rank 0 copies each
parameter to the host, serialises the buckets into its node's store, and each rollout worker reads
them back from its own node's store. ``broadcast`` sends the same buckets over a collective instead:
rank 0 packs each bucket once and broadcasts it; each rollout worker receives it into one buffer and
hands the engine views of it, bucket by bucket, so neither side ever holds the whole model twice and
no bytes go through the object store.

The group is its own: a ``TCPStore`` at the address learner rank 0's node names and a standalone
``ProcessGroupGloo`` over it (rank 0 = learner rank 0, rank 1 + i = rollout worker i). It never
touches the default ``torch.distributed`` group, which belongs to DeepSpeed on the learners and to
vLLM on the rollout workers. The other learner ranks stay out of it and only join ZeRO-3's gathers.

A broadcast needs every rollout worker receiving at the same time, which the synchronous hand-off
gives (``live``: the driver submits rank 0's send and every worker's receive at once). Anything else
goes through the object store, on demand: a worker restarted by Ray, a worker that lost the group
mid-transfer, or async generation (workers busy generating load the next version with their next
shard). Rank 0 then returns a :class:`BroadcastWeights` that names the learners, and the worker asks
them to put the version it needs in the store (every rank joins, for ZeRO-3's gathers); the learners
hold that version until their next update, which in synchronous training comes after every worker
has it. A transport error on any side ends the group; the driver connects a new one before the next
hand-off (:meth:`grpo_ray.run.learner_group.LearnerGroup.connect`).

The transport is gloo, so the strategy runs wherever the rollout engine lives in the worker's own
process (vLLM's CPU build with one worker, the transformers engine): what CI tests. On GPUs the
engine runs in vLLM's own processes, which only vLLM's weight-transfer engines (NCCL) reach; config
validation refuses ``broadcast`` with rollout GPUs (docs/gpu_clusters.md).
"""

from __future__ import annotations

import datetime
import logging
import math
import pickle
from typing import Iterable, Iterator, Optional

import torch

from grpo_ray.sync.base import SyncTopology
from grpo_ray.sync.object_store import DEFAULT_BUCKET_BYTES, FullSync, buckets_of
from grpo_ray.wire import WeightUpdate

log = logging.getLogger("grpo_ray.sync")

END = torch.tensor([0, 0], dtype=torch.int64)
ALIGN = 16  # bytes: every tensor in a packed bucket starts at a multiple of this (any dtype can view it)


class TransportError(RuntimeError):
    """The group broke (a member died or timed out): the weights go through the object store instead."""


class VersionGone(RuntimeError):
    """The learners have moved past the version a worker asked for."""


class BroadcastWeights(WeightUpdate):
    """Rank 0's record of a broadcast version: its size and the learners that can put it in the store."""

    kind = "broadcast"

    def __init__(self, version: int, total_bytes: int, learners: tuple = (), complete: bool = True) -> None:
        self.version, self.total_bytes, self.learners = version, total_bytes, learners
        self.complete = complete  # False: the broadcast broke; whoever missed it asks the learners

    def num_bytes(self) -> int:
        return self.total_bytes


class GlooGroup:
    """A process group of ``size`` members at ``address``, apart from ``torch.distributed``'s default one."""

    def __init__(self, address: tuple[str, int], rank: int, size: int, timeout_s: float) -> None:
        from torch.distributed import PrefixStore, ProcessGroupGloo, TCPStore

        timeout = datetime.timedelta(seconds=timeout_s)
        host, port = address
        self.store = TCPStore(host, port, size, rank == 0, timeout=timeout, wait_for_workers=False)
        self.group = ProcessGroupGloo(PrefixStore("grpo_ray/sync", self.store), rank, size, timeout)
        self.rank = rank

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        from torch.distributed import BroadcastOptions

        options = BroadcastOptions()
        options.rootRank = 0
        try:
            self.group.broadcast([tensor], options).wait()
        except RuntimeError as err:
            raise TransportError(str(err).splitlines()[0] if str(err) else type(err).__name__) from err
        return tensor

    def send_buckets(self, buckets: Iterable[dict[str, torch.Tensor]]) -> int:
        """Rank 0: each bucket as (header, layout, bytes); an all-zero header ends the version."""
        total = 0
        for bucket in buckets:
            layout, flat = pack(bucket)
            meta = torch.frombuffer(bytearray(pickle.dumps(layout)), dtype=torch.uint8)
            self.broadcast(torch.tensor([meta.numel(), flat.numel()], dtype=torch.int64))
            self.broadcast(meta)
            self.broadcast(flat)
            total += flat.numel()
        self.broadcast(END.clone())
        return total

    def receive_buckets(self) -> Iterator[dict[str, torch.Tensor]]:
        """A rollout worker: the buckets rank 0 sends, as views of one buffer per bucket."""
        while True:
            header = self.broadcast(torch.empty(2, dtype=torch.int64))
            meta_len, data_len = (int(x) for x in header)
            if meta_len == 0:
                return
            layout = pickle.loads(self.broadcast(torch.empty(meta_len, dtype=torch.uint8)).numpy().tobytes())
            yield unpack(layout, self.broadcast(torch.empty(data_len, dtype=torch.uint8)))

    def close(self) -> None:
        self.group = self.store = None


def layout_of(specs: Iterable[tuple[str, str, tuple]]) -> tuple[list[tuple[str, str, tuple, int, int]], int]:
    """Where each tensor of a packed bucket lies, from ``(name, dtype, shape)`` alone, and the bucket's
    size: ``(name, dtype, shape, offset, nbytes)``, each offset a multiple of ``ALIGN`` bytes so that the
    bytes can be viewed as the dtype again. A receiver that knows the specs sizes its buffer with it."""
    layout, offset = [], 0
    for name, dtype, shape in specs:
        offset += -offset % ALIGN
        nbytes = math.prod(shape) * getattr(torch, dtype).itemsize
        layout.append((name, dtype, tuple(shape), offset, nbytes))
        offset += nbytes
    return layout, offset


def pack(bucket: dict[str, torch.Tensor]) -> tuple[list[tuple[str, str, tuple, int, int]], torch.Tensor]:
    """(layout, bytes): every tensor's bytes in one uint8 tensor (a single copy), where
    :func:`layout_of` puts them."""
    layout, total = layout_of((name, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for name, t in bucket.items())
    flat = torch.zeros(total, dtype=torch.uint8)
    for (name, _, _, offset, nbytes), tensor in zip(layout, bucket.values()):
        flat[offset:offset + nbytes] = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    return layout, flat


def unpack(layout, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors of a packed bucket, as views of ``flat`` (no copy)."""
    return {name: flat[offset:offset + nbytes].view(getattr(torch, dtype)).reshape(shape)
            for name, dtype, shape, offset, nbytes in layout}


class BroadcastSync(FullSync):
    """Full weights from learner rank 0 to every rollout worker over a gloo group (module docstring).

    The transport is what a subclass replaces (``grpo_ray.sync.vllm_transfer``): how each side joins it
    (:meth:`_open`), what rank 0 sends (:meth:`_state`, :meth:`_transmit`) and how a worker takes it in
    (:meth:`_take`). The fallbacks through the object store stay the same."""

    name = "broadcast"
    needs_address = True
    reaches_gpu_engines = False

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES, timeout_s: float = 300.0) -> None:
        super().__init__(bucket_bytes)
        self.timeout_s = timeout_s
        self.group = None  # this side's end of the transport: None while not connected (or after it broke)
        self.held_version: Optional[int] = None  # learners: the version their weights are now

    def connect(self, side, index, topology: SyncTopology, engine=None) -> None:
        super().connect(side, index, topology, engine)
        self.close()
        if side == "learner" and index != 0:
            return
        if topology.address is None:
            raise ValueError(f"sync.strategy={self.name} needs the rendezvous address of learner rank 0's node")
        self.group = self._open(side, index, topology, engine)

    def _open(self, side, index, topology: SyncTopology, engine):
        """This side's end of the transport (learner rank 0 is rank 0, rollout worker i is rank 1 + i)."""
        rank = 0 if side == "learner" else 1 + index
        return GlooGroup(topology.address, rank, 1 + topology.num_rollouts, self.timeout_s)

    @property
    def connected(self) -> bool:
        return self.group is not None

    # -- the learner side ---------------------------------------------------------------------------
    def send(self, learner, version, put, live: bool = False):
        self.held_version = version
        if not live or self.group is None:  # the other ranks, and every hand-off that is not synchronous
            return super().send(learner, version, put)
        state = self._state(learner)
        total, complete = 0, True
        try:
            total = self._transmit(state)
        except TransportError as err:
            complete = False
            log.warning("weight broadcast of version %d failed (%s); the rollout workers get it through the object "
                        "store", version, err)
            self.close()
        finally:
            for _ in state:  # the other ranks may still be gathering (ZeRO-3): keep in step with them, error or not
                pass
        return BroadcastWeights(version, total, tuple(self.topology.learners), complete)

    def _state(self, learner) -> Iterator[tuple[str, Optional[torch.Tensor]]]:
        """What rank 0 sends: the learner's weights, as ``(name, tensor)``."""
        return learner.full_state()

    def _transmit(self, state) -> int:
        """Rank 0: ``state`` to every worker (it may stop early on an error); returns the bytes sent."""
        return self.group.send_buckets(buckets_of(state, self.bucket_bytes))

    def store(self, learner, version: int, put) -> Optional[WeightUpdate]:
        """On every learner rank: ``version`` in the object store, for a worker that missed its broadcast."""
        if version != self.held_version:
            raise VersionGone(f"the learners hold version {self.held_version}, not {version}")
        return super().send(learner, version, put)

    # -- the rollout side ---------------------------------------------------------------------------
    def receive(self, engine, handle, fetch, live: bool = False) -> None:
        if live and self.group is not None:
            try:
                self._take(engine)
                engine.version = handle.version
                return
            except TransportError as err:
                log.warning("weight broadcast of version %d failed on this worker (%s); loading it from the object "
                            "store", handle.version, err)
                self.close()
        self.receive_from_store(engine, handle, fetch)

    def _take(self, engine) -> None:
        """A rollout worker: the version rank 0 is sending, into ``engine``."""
        engine.load_weights(self.group.receive_buckets())

    def apply(self, engine, update, fetch) -> None:
        if isinstance(update, BroadcastWeights):  # sent by broadcast: ask the learners to put it in the store
            refs = [learner.store_weights.remote(update.version) for learner in update.learners]
            update = fetch(refs)[0]
        super().apply(engine, update, fetch)

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = None
