"""A shard's rows as micro-batches: a fixed number of rows each, or packed to a token budget; and the
agreement that keeps every data-parallel rank making the same calls.

DeepSpeed's ranks meet in collectives during a step: gradient reductions in backward (every backward
under ZeRO-2 and 3, the last one under ZeRO-0 and 1) and, under ZeRO-3, a gather of each module's
weights at each of its calls, forward and backward. A rank that made one call fewer than the others
would leave them waiting. With micro-batches packed to a token budget their number differs between
ranks, so the ranks agree on the largest (one all-reduce) and a rank with fewer runs stand-ins: a
copy of one of its micro-batches whose loss is multiplied by 0, adding nothing to the gradient.
Under ZeRO-3 they also agree, micro-batch by micro-batch, on the module calls inside the forward:
whether prompts are shared (one call of the decoder or two) and how many chunks the LM head runs in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from grpo_ray.learner.padding import PaddedBatch, pack_by_tokens
from grpo_ray.wire import TrainShard


@dataclass(frozen=True)
class MicroBatch:
    """One forward/backward: padded rows, their advantages [n], the sampler's logprobs [n, T] (or None);
    ``share_prefix``: run each distinct prompt once; ``num_chunks``: LM-head chunks (None: as many as T
    needs); ``weight``: 1, or 0 for a stand-in that only keeps this rank in step with the others."""

    batch: PaddedBatch
    advantages: Tensor
    sampling_logprobs: Tensor | None
    share_prefix: bool
    num_chunks: int | None = None
    weight: float = 1.0


def row_groups(shard: TrainShard, micro_batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """The shard's row indices per micro-batch: packed to ``max_tokens`` padded tokens when set, else
    ``micro_batch_size`` consecutive rows."""
    n = len(shard.completion_ids)
    if max_tokens:
        return pack_by_tokens([len(p) for p in shard.prompt_ids], [len(c) for c in shard.completion_ids], max_tokens)
    return [list(range(start, min(start + micro_batch_size, n))) for start in range(0, n, micro_batch_size)]


def all_ranks_max(values: list, device: torch.device) -> list:
    """The elementwise maximum of ``values`` (ints, or lists of ints of one shape on every rank) over the
    data-parallel ranks."""
    t = torch.tensor(values, dtype=torch.long, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def in_step(micro: list[MicroBatch], *, count: bool, forward_calls: bool, device: torch.device) -> list[MicroBatch]:
    """``micro`` as every rank will run it (call on every rank): with ``count``, stand-ins appended up to
    the largest number of micro-batches of any rank; with ``forward_calls`` (ZeRO-3), each micro-batch's
    prefix sharing (only where every rank shares) and head chunks (the most of any rank) agreed."""
    if count:
        most = all_ranks_max([len(micro)], device)[0]
        micro = micro + [dataclasses.replace(micro[-1], weight=0.0)] * (most - len(micro))
    if forward_calls:
        agreed = all_ranks_max([[int(not m.share_prefix), m.num_chunks or 0] for m in micro], device)
        micro = [dataclasses.replace(m, share_prefix=not unshared, num_chunks=chunks or None)
                 for m, (unshared, chunks) in zip(micro, agreed)]
    return micro
