"""Log-probabilities of chosen tokens and per-token entropy from logits, without big temporaries.

Logits are [N, T, V] with V around 150k for current tokenizers: a full ``log_softmax`` copy can cost
more memory than the forward pass, so both functions work a slice at a time, as TRL 1.16 does in its
non-Triton path (``trl/trainer/utils.py:538-643``). At long T even the logits are too big to hold
(N=8, T=4096, V=128k is 17 GB in float32): :func:`chunked_logprobs` starts from the hidden states
and the LM head instead, and never holds more than one chunk of positions' logits.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint


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


def chunked_logprobs(
    hidden: Tensor,
    index: Tensor,
    head: Callable[[Tensor], Tensor],
    *,
    chunk_size: int,
    temperature: float = 1.0,
    softcap: float | None = None,
    with_entropy: bool = False,
    num_chunks: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Logprobs of ``index`` under softmax(logits / temperature), logits = head(hidden): hidden [N, T, H],
    index [N, T] -> logprobs [N, T], and the entropy [N, T] of that softmax (no gradient) or None.

    Equal to ``selective_log_softmax(head(hidden).float() / temperature, index)``, ``chunk_size``
    positions at a time, so float32 logits exist for one chunk only. With gradients on, each chunk's
    head and log-softmax but the last run under activation checkpointing: backward recomputes that
    chunk's logits rather than keeping them, so backward too holds one chunk at a time. ``softcap`` is Gemma 2's
    final-logit soft-capping, ``cap * tanh(logits / cap)``, before the temperature. ``num_chunks``
    (at least ceil(T / chunk_size)) adds empty chunks at the end, for callers whose head must run
    the same number of times in every process (ZeRO-3 gathers its weight at each call).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    width = index.shape[1]
    needed = max(1, -(-width // chunk_size))
    if num_chunks is not None and num_chunks < needed:
        raise ValueError(f"num_chunks={num_chunks} cannot cover {width} positions in chunks of {chunk_size}")
    logprobs, entropies = [], []
    chunks = num_chunks or needed
    for k in range(chunks):
        cols = slice(min(k * chunk_size, width), min((k + 1) * chunk_size, width))
        entropy = _ForwardOnly() if with_entropy else None
        fn = partial(_chunk_logprobs, head=head, temperature=temperature, softcap=softcap, entropy=entropy)
        # The last chunk keeps its logits for backward instead: backward starts with it, so holding them
        # from its forward to there costs no more memory than recomputing them there, and saves one
        # head call (a whole completion within one chunk is then never recomputed). Every process has
        # the same ``chunks``, so the head still runs the same number of times in each.
        if torch.is_grad_enabled() and k < chunks - 1:
            logprobs.append(checkpoint(fn, hidden[:, cols], index[:, cols], use_reentrant=False))
        else:
            logprobs.append(fn(hidden[:, cols], index[:, cols]))
        if entropy is not None:
            entropies.append(entropy.value)
    return torch.cat(logprobs, dim=1), torch.cat(entropies, dim=1) if with_entropy else None


class _ForwardOnly:
    """A value computed on a chunk's forward pass and left alone when checkpointing recomputes it."""

    value: Tensor | None = None


def _chunk_logprobs(hidden: Tensor, index: Tensor, *, head, temperature: float, softcap: float | None,
                    entropy: _ForwardOnly | None) -> Tensor:
    logits = head(hidden).float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    logits = logits / temperature
    if entropy is not None and entropy.value is None:
        with torch.no_grad():
            entropy.value = entropy_from_logits(logits)
    return selective_log_softmax(logits, index)
