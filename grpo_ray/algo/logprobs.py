"""Log-probabilities of chosen tokens and per-token entropy from logits, without big temporaries.

Logits are [N, T, V] with V around 150k for current tokenizers: a full ``log_softmax`` copy can cost
more memory than the forward pass, so both functions work a slice at a time, as TRL 1.16 does in its
non-Triton path (``trl/trainer/utils.py:538-643``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_log_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """log softmax(logits)[index] for each position: [N, T, V], [N, T] -> [N, T].

    Equal to ``logits.log_softmax(-1).gather(-1, index[..., None]).squeeze(-1)``, but never holds
    more than one row's [T, V] log-softmax. In float32/float64 it uses x_i - logsumexp(x), one row at
    a time; in bfloat16/float16 logsumexp loses too much precision, so it falls back to a per-row
    ``log_softmax`` (TRL 1.16 ``trl/trainer/utils.py:582-596``).
    """
    index = index.unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        selected = torch.gather(logits, dim=-1, index=index).squeeze(-1)
        logsumexp = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return selected - logsumexp
    rows = [F.log_softmax(row, dim=-1).gather(-1, row_index) for row, row_index in zip(logits, index)]
    return torch.stack(rows).squeeze(-1)


def entropy_from_logits(logits: Tensor, chunk_size: int = 128) -> Tensor:
    """Shannon entropy in nats of softmax(logits) along the last axis: [..., V] -> [...].

    Computed from ``log_softmax`` (stable for large logits) on ``chunk_size`` flattened rows at a time
    to bound peak memory (TRL 1.16 ``trl/trainer/utils.py:604-643``). Unlike TRL, ``-inf`` logits
    (tokens masked out by top-k / top-p) count as probability 0 instead of turning the entropy NaN.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.shape[0] == 0:
        return logits.new_zeros(logits.shape[:-1])
    chunks = []
    for chunk in flat.split(chunk_size, dim=0):
        logps = F.log_softmax(chunk, dim=-1)
        # p * log p is 0 * -inf = NaN for masked tokens; the finite floor makes it 0, its limit.
        finite_logps = logps.clamp(min=torch.finfo(logps.dtype).min)
        chunks.append(-(logps.exp() * finite_logps).sum(-1))
    return torch.cat(chunks).reshape(logits.shape[:-1])
