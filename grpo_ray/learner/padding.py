"""Padding rollout rows (lists of token ids) into the tensors a forward pass needs.

Prompts are left-padded and completions right-padded, so every completion starts at the same column
and its logprobs are one slice of the logits. Position ids come from the attention mask, so a padded
row sees the same positions as the unpadded sequence the rollout engine scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def unique_prompts(mb: PaddedBatch) -> tuple[Tensor, Tensor]:
    """Indices of the distinct prompt rows of a micro-batch and, per row, which of them it repeats:
    ``first`` [U], ``inverse`` [N] with ``input_ids[first[inverse], :P] == input_ids[:, :P]``."""
    prompts = mb.input_ids[:, : mb.prompt_width]
    _, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(inverse), dtype=torch.long, device=inverse.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(inverse), device=inverse.device), reduce="amin")
    return first, inverse


def pack_by_tokens(prompt_lens: Sequence[int], completion_lens: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Row indices grouped into micro-batches whose padded size, rows x (longest prompt + longest
    completion), is at most ``max_tokens``; a row over the budget on its own gets a micro-batch alone.

    Rows go longest first, each group filled until the next row would break the budget (verl's dynamic
    batch size packs to a token budget too, there without padding): similar lengths share a group, so
    little of the budget is padding. Ties keep their order, so a group's equal-length completions of
    one prompt stay together for the shared-prompt forward.

    >>> pack_by_tokens([2, 2, 2, 2], [6, 1, 3, 2], 12)
    [[0], [2, 3], [1]]
    """
    order = sorted(range(len(prompt_lens)), key=lambda i: -(prompt_lens[i] + max(1, completion_lens[i])))
    groups: list[list[int]] = []
    width_p = width_c = 0
    for i in order:
        p, c = prompt_lens[i], max(1, completion_lens[i])  # pad_rows gives an empty completion one column
        if groups and (len(groups[-1]) + 1) * (max(width_p, p) + max(width_c, c)) <= max_tokens:
            groups[-1].append(i)
            width_p, width_c = max(width_p, p), max(width_c, c)
        else:
            groups.append([i])
            width_p, width_c = p, c
    return groups
