"""Completion masks from EOS positions and DAPO's masking of truncated completions."""

from __future__ import annotations

import pytest
import torch

from grpo_ray.algo import completion_mask_from_eos, mask_truncated_completions

pytestmark = pytest.mark.unit

EOS, OTHER_EOS, PAD = 2, 3, 0


def test_mask_keeps_tokens_through_the_first_eos():
    completion_ids = torch.tensor(
        [
            [5, EOS, 7, EOS],  # EOS at 1: later EOS is padding
            [5, 6, 7, 8],  # no EOS: truncated, keep all
            [EOS, PAD, PAD, PAD],  # empty answer: the EOS itself is trained on
            [5, 6, 7, EOS],  # EOS in the last slot
        ]
    )
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]])
    mask = completion_mask_from_eos(completion_ids, EOS)
    assert torch.equal(mask, expected) and mask.dtype == torch.long


def test_any_of_several_eos_ids_ends_a_completion():
    completion_ids = torch.tensor([[5, OTHER_EOS, EOS, 9], [5, 6, EOS, OTHER_EOS]])
    mask = completion_mask_from_eos(completion_ids, [EOS, OTHER_EOS])
    assert torch.equal(mask, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]))


def test_mask_needs_two_dimensional_ids():
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        completion_mask_from_eos(torch.tensor([1, 2, 3]), EOS)


def test_truncated_rows_are_zeroed_and_dtype_is_kept():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    is_truncated = torch.tensor([False, True, False])
    masked = mask_truncated_completions(mask, is_truncated)
    assert torch.equal(masked, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert masked.dtype == mask.dtype


def test_truncation_flags_must_have_one_per_row():
    with pytest.raises(ValueError, match=r"expected \[N\] = \[2\]"):
        mask_truncated_completions(torch.ones(2, 3), torch.tensor([True, False, True]))
