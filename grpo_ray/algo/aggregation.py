"""How per-token losses [N, T] become one scalar: the ``loss_type`` registry.

The choice matters more than it looks: it decides how much each token and each sequence weighs, and
whether the loss stays the same when a learner splits its batch into micro-batches or across
data-parallel ranks.

=========  ==============================================  ==========================================
loss_type  loss                                             split across micro-batches / ranks
=========  ==============================================  ==========================================
grpo       mean over sequences of the per-sequence token    exact when summed with
           mean (Shao et al. 2024). Long sequences weigh    ``global_num_sequences``; otherwise only
           less per token: a length bias (Liu et al. 2025). when every micro-batch has as many rows
bnpo       sum over tokens / tokens in *this* batch.        never: the normaliser is local, so tokens
                                                            of short micro-batches weigh more
dr_grpo    sum over tokens / (N * max_completion_length):   exact when summed with
           a constant, so no length bias (Dr. GRPO,         ``global_num_sequences``
           Liu et al. 2025, arXiv:2503.20783)
dapo       sum over tokens / active tokens in the global    exact when summed with
           batch: token-level loss (DAPO, Yu et al. 2025,   ``global_num_tokens``
           arXiv:2503.14476)
=========  ==============================================  ==========================================

"Summed" means the learner adds the gradients of its micro-batches and data-parallel ranks. If its
engine *averages* them instead (DDP and DeepSpeed average over ranks, DeepSpeed also divides by the
accumulation steps), pass the global count divided by the number of micro-batches averaged over.
TRL 1.16 does exactly that for dapo: its normaliser is ``num_items_in_batch`` (active tokens of the
whole generation batch, gathered over processes, grpo_trainer.py:2497-2498) divided by
``num_processes`` and scaled by ``gradient_accumulation_steps / steps_per_generation``
(grpo_trainer.py:3168-3173). For grpo, bnpo and dr_grpo TRL divides by the accumulation steps
(grpo_trainer.py:3153-3167); here that is the learner's job, so every aggregation returns the loss of
the rows it was given. Without the global counts each one normalises by this batch alone and equals
TRL's ``_compute_loss`` before that division.

The right-hand column is a property of each registered entry, ``LOSS_AGGREGATIONS.get(name).split_invariant``:
a learner that sums micro-batches and ranks reads it to decide how to scale each micro-batch's loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from grpo_ray.utils.registry import Registry


class AggregateFn(Protocol):
    def __call__(
        self,
        per_token_loss: Tensor,
        mask: Tensor,
        *,
        max_completion_length: int | None,
        global_num_tokens: float | Tensor | None,
        global_num_sequences: int | None,
    ) -> Tensor: ...


@dataclass(frozen=True)
class LossAggregation:
    """A registered ``loss_type``: called like its function, and carrying how it behaves when split.

    Attributes:
        aggregate: per-token losses [N, T] (or [N, 1]) and mask [N, T] -> scalar.
        split_invariant: with the global counts passed, the micro-batch losses of a step *sum* to the
            full batch's loss, so a learner whose engine averages must multiply each by the number of
            micro-batches averaged over; False: the loss is local to its batch and is left averaged.
    """

    aggregate: AggregateFn
    split_invariant: bool

    def __call__(self, per_token_loss: Tensor, mask: Tensor, **counts) -> Tensor:
        return self.aggregate(per_token_loss, mask, **counts)


LOSS_AGGREGATIONS: Registry[LossAggregation] = Registry("loss_type")


def _register(name: str, *, split_invariant: bool) -> Callable[[AggregateFn], AggregateFn]:
    def add(fn: AggregateFn) -> AggregateFn:
        LOSS_AGGREGATIONS.register(name)(LossAggregation(fn, split_invariant))
        return fn

    return add


def _count(value: float | Tensor, like: Tensor) -> Tensor:
    # TRL clamps its token count at 1 (grpo_trainer.py:3170) so an all-masked batch gives 0, not NaN.
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).clamp(min=1.0)


@_register("grpo", split_invariant=True)
def aggregate_grpo(per_token_loss, mask, *, max_completion_length, global_num_tokens, global_num_sequences):
    """Mean over sequences of masked token means; [N, T] or [N, 1], mask [N, T] -> scalar.

    TRL 1.16 ``grpo_trainer.py:3153-3154``. With ``global_num_sequences`` the sum of per-sequence
    means is divided by that count instead of this batch's N, so summing micro-batches is exact.
    """
    per_sequence = (per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    if global_num_sequences is None:
        return per_sequence.mean()
    return per_sequence.sum() / _count(global_num_sequences, per_sequence)


@_register("bnpo", split_invariant=False)
def aggregate_bnpo(per_token_loss, mask, *, max_completion_length, global_num_tokens, global_num_sequences):
    """Sum of masked token losses / active tokens in this batch; -> scalar. Local by definition.

    TRL 1.16 ``grpo_trainer.py:3158-3159``. Ignores the global counts: with a global token count it
    would be ``dapo``.
    """
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)


@_register("dr_grpo", split_invariant=True)
def aggregate_dr_grpo(per_token_loss, mask, *, max_completion_length, global_num_tokens, global_num_sequences):
    """Sum of masked token losses / (N * max_completion_length); -> scalar (Liu et al. 2025).

    TRL 1.16 ``grpo_trainer.py:3163-3164``, with N = ``per_token_loss.size(0)`` or
    ``global_num_sequences`` when given.
    """
    if max_completion_length is None or max_completion_length < 1:
        raise ValueError(
            f"loss_type='dr_grpo' needs max_completion_length >= 1 (the generation token limit), "
            f"got {max_completion_length!r}"
        )
    num_sequences = per_token_loss.size(0) if global_num_sequences is None else global_num_sequences
    total = (per_token_loss * mask).sum()
    return total / (_count(num_sequences, total) * max_completion_length)


@_register("dapo", split_invariant=True)
def aggregate_dapo(per_token_loss, mask, *, max_completion_length, global_num_tokens, global_num_sequences):
    """Sum of masked token losses / ``global_num_tokens`` (default: this batch's); -> scalar.

    DAPO's token-level policy gradient loss (Yu et al. 2025). TRL 1.16
    ``grpo_trainer.py:3168-3173``; see the module docstring for how its normaliser maps to ours.
    """
    total = (per_token_loss * mask).sum()
    num_tokens = mask.sum() if global_num_tokens is None else global_num_tokens
    return total / _count(num_tokens, total)
