"""Padding rollout rows (lists of token ids) into the tensors a forward pass needs.

Prompts are left-padded and completions right-padded, so every completion starts at the same column
and its logprobs are one slice of the logits. Position ids come from the attention mask, so a padded
row sees the same positions as the unpadded sequence the rollout engine scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor


@dataclass
class PaddedBatch:
    input_ids: Tensor  # [N, P + T]
    attention_mask: Tensor  # [N, P + T]
    position_ids: Tensor  # [N, P + T]
    completion_ids: Tensor  # [N, T]
    completion_mask: Tensor  # [N, T] 1 on real completion tokens
    prompt_width: int  # P

    def to(self, device) -> "PaddedBatch":
        return PaddedBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
            self.completion_ids.to(device), self.completion_mask.to(device), self.prompt_width,
        )


def pad_rows(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int) -> PaddedBatch:
    """[N][P_i] prompts and [N][T_i] completions -> :class:`PaddedBatch`."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    n = len(prompt_ids)
    width_p = max(map(len, prompt_ids))
    width_c = max(1, max(map(len, completion_ids)))
    ids = torch.full((n, width_p + width_c), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width_p + width_c), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        ids[i, width_p - len(p) : width_p] = torch.tensor(p, dtype=torch.long)
        attn[i, width_p - len(p) : width_p] = 1
        if c:
            ids[i, width_p : width_p + len(c)] = torch.tensor(c, dtype=torch.long)
            attn[i, width_p : width_p + len(c)] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    return PaddedBatch(
        input_ids=ids, attention_mask=attn, position_ids=position_ids,
        completion_ids=ids[:, width_p:], completion_mask=attn[:, width_p:].clone(), prompt_width=width_p,
    )


def pad_completion_values(values: list[list[float]], width: int) -> Tensor:
    """[N][T_i] per-token values (e.g. sampling logprobs) -> [N, width], 0 past each row's end."""
    out = torch.zeros((len(values), width), dtype=torch.float32)
    for i, row in enumerate(values):
        row = row[:width]
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def unique_prompts(mb: PaddedBatch) -> tuple[Tensor, Tensor]:
    """Indices of the distinct prompt rows of a micro-batch and, per row, which of them it repeats:
    ``first`` [U], ``inverse`` [N] with ``input_ids[first[inverse], :P] == input_ids[:, :P]``."""
    prompts = mb.input_ids[:, : mb.prompt_width]
    _, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long, device=inverse.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse), device=inverse.device), reduce="amin")
    return first, inverse


@dataclass
class TrainShard:
    """One learner's rows of a step, laid out as in the rollout (row i*G+j)."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: list[float]
    row_in_loss: list[bool]  # False for rows excluded (truncated and masked, or a dropped zero-std group)
    global_num_tokens: float  # active completion tokens over every learner's shard
    global_num_sequences: int  # rows in the loss over every learner's shard
    sampling_logprobs: Optional[list[list[float]]] = None
    extra: dict[str, Any] = field(default_factory=dict)


def contiguous_slices(n: int, parts: int) -> list[slice]:
    """``n`` items in ``parts`` contiguous, near-equal slices (the first ones one longer)."""
    size, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(slice(start, end))
        start = end
    return out


def split_into_shards(
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    advantages: list[float],
    row_in_loss: list[bool],
    num_learners: int,
    sampling_logprobs: Optional[list[list[float]]] = None,
) -> list[TrainShard]:
    """Split a step's N rows evenly over the learners; the global counts make the loss split-invariant."""
    global_tokens = float(sum(len(c) for c, keep in zip(completion_ids, row_in_loss) if keep))
    global_sequences = int(sum(row_in_loss))
    return [
        TrainShard(
            prompt_ids=prompt_ids[s], completion_ids=completion_ids[s], advantages=advantages[s],
            row_in_loss=row_in_loss[s], global_num_tokens=global_tokens, global_num_sequences=global_sequences,
            sampling_logprobs=sampling_logprobs[s] if sampling_logprobs is not None else None,
        )
        for s in contiguous_slices(len(completion_ids), num_learners)
    ]
