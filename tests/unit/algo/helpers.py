"""Small random GRPO batches shared by the algo tests (tiny tensors: the suite runs on 2 CPU cores)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Batch:
    logprobs: Tensor  # [N, T], leaf with requires_grad
    old_logprobs: Tensor  # [N, T]
    ref_logprobs: Tensor  # [N, T]
    advantages: Tensor  # [N]
    completion_mask: Tensor  # [N, T] long

    def rows(self, start: int, stop: int) -> Batch:
        """A micro-batch of rows that shares the full batch's ``logprobs`` leaf, so grads add up."""
        return Batch(
            self.logprobs[start:stop],
            self.old_logprobs[start:stop],
            self.ref_logprobs[start:stop],
            self.advantages[start:stop],
            self.completion_mask[start:stop],
        )


def random_batch(seed: int, num_sequences: int = 6, num_tokens: int = 5, empty_row: bool = False) -> Batch:
    """Log-probs near each other so ratios straddle both clip edges; completion lengths 1..T.

    ``empty_row`` makes the last row fully masked (a truncated completion), an edge case for every
    aggregation.
    """
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(num_sequences, num_tokens, generator=gen, dtype=torch.float64) * 2 - 0.1
    # A spread of 0.6 in log space gives ratios from ~0.55 to ~1.8: both clip sides are hit.
    logprobs = old + (torch.rand(num_sequences, num_tokens, generator=gen, dtype=torch.float64) - 0.5) * 1.2
    ref = old + (torch.rand(num_sequences, num_tokens, generator=gen, dtype=torch.float64) - 0.5) * 0.6
    advantages = torch.randn(num_sequences, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, num_tokens + 1, (num_sequences,), generator=gen)
    lengths[0] = num_tokens  # at least one full-length completion
    if empty_row:
        lengths[-1] = 0
    mask = (torch.arange(num_tokens).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return Batch(logprobs.requires_grad_(), old, ref, advantages, mask)
