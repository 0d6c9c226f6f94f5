"""Chosen-token log-probs and entropy from logits: exact small cases and agreement with the naive form."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_ray.algo import entropy_from_logits, selective_log_softmax

pytestmark = pytest.mark.unit


def test_selective_log_softmax_by_hand():
    # Row [0, ln 3]: softmax [1/4, 3/4]. Uniform row of 4: each 1/4.
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])
    index = torch.tensor([[1, 0]])
    expected = torch.tensor([[math.log(0.75), math.log(0.5)]])
    torch.testing.assert_close(selective_log_softmax(logits, index), expected)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.bfloat16, 2e-2)])
def test_selective_log_softmax_matches_naive_log_softmax(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 4, 11, generator=gen) * 5).to(dtype)
    index = torch.randint(0, 11, (3, 4), generator=gen)
    naive = logits.double().log_softmax(-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    result = selective_log_softmax(logits, index)
    assert result.dtype == dtype and result.shape == (3, 4)
    torch.testing.assert_close(result.double(), naive, atol=tol, rtol=tol)


def test_selective_log_softmax_is_differentiable():
    logits = torch.zeros(1, 1, 3, requires_grad=True)
    selective_log_softmax(logits, torch.tensor([[2]])).sum().backward()
    # d/dx_j log softmax_2 = 1[j=2] - 1/3
    torch.testing.assert_close(logits.grad, torch.tensor([[[-1 / 3, -1 / 3, 2 / 3]]]))


def test_entropy_by_hand():
    logits = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # uniform over 4: ln 4
            [1000.0, 0.0, 0.0, 0.0],  # one-hot in float32: 0, and no overflow
            [0.0, 0.0, -math.inf, -math.inf],  # top-k masked: uniform over 2, ln 2, not NaN
        ]
    )
    expected = torch.tensor([math.log(4.0), 0.0, math.log(2.0)])
    torch.testing.assert_close(entropy_from_logits(logits), expected)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 128])
def test_entropy_does_not_depend_on_chunking_and_keeps_leading_shape(chunk_size):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 7, generator=gen, dtype=torch.float64)
    probs = logits.softmax(-1)
    naive = -(probs * probs.log()).sum(-1)
    result = entropy_from_logits(logits, chunk_size=chunk_size)
    assert result.shape == (2, 3)
    torch.testing.assert_close(result, naive)


def test_entropy_of_empty_batch_and_bad_chunk():
    assert entropy_from_logits(torch.zeros(0, 3, 5)).shape == (0, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        entropy_from_logits(torch.zeros(1, 5), chunk_size=0)
