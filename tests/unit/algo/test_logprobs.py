"""Chosen-token log-probs and entropy from logits: exact small cases and agreement with the naive form."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_ray.algo import chunked_logprobs, entropy_from_logits, selective_log_softmax

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


def _head_and_batch(seed: int = 2, n: int = 3, t: int = 7, h: int = 5, v: int = 11):
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(h, v, bias=False, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, h, generator=gen, dtype=torch.float64))
    hidden = torch.randn(n, t, h, generator=gen, dtype=torch.float64, requires_grad=True)
    return head, hidden, torch.randint(0, v, (n, t), generator=gen)


def _whole(head, hidden, index, temperature=1.0):
    logits = head(hidden).float() / temperature
    return selective_log_softmax(logits, index), entropy_from_logits(logits.detach())


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 50])  # 3 does not divide T=7; 50 is one chunk
def test_chunked_logprobs_equal_the_whole_logits_and_their_gradients(chunk_size):
    head, hidden, index = _head_and_batch()
    lp, ent = _whole(head, hidden, index, temperature=0.7)
    grads = torch.autograd.grad(lp.sum(), [hidden, head.weight])
    lp_c, ent_c = chunked_logprobs(hidden, index, head, chunk_size=chunk_size, temperature=0.7, with_entropy=True)
    grads_c = torch.autograd.grad(lp_c.sum(), [hidden, head.weight])
    torch.testing.assert_close(lp_c, lp)
    torch.testing.assert_close(ent_c, ent)
    assert not ent_c.requires_grad
    for g, g_c in zip(grads, grads_c):
        torch.testing.assert_close(g_c, g)


def test_chunked_logprobs_keep_no_more_than_the_last_chunks_logits_for_backward():
    """What autograd saves holds [.., V] logits of the last chunk only (backward starts with it, so keeping
    them costs no more than recomputing them there); the other chunks are recomputed in backward, one at a
    time (the unchunked form keeps the whole [N, T, V])."""
    head, hidden, index = _head_and_batch(t=8, v=64)
    calls = []
    head.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[1]))

    def widest_saved_logits(fn) -> int:
        """The most positions of any saved tensor that spans the vocabulary."""
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
            out = fn()
        out.sum().backward()
        return max(shape[1] for shape in saved if len(shape) == 3 and shape[-1] == 64)

    assert widest_saved_logits(lambda: _whole(head, hidden, index)[0]) == 8
    calls.clear()
    assert widest_saved_logits(lambda: chunked_logprobs(hidden, index, head, chunk_size=3)[0]) == 2  # the last chunk
    assert calls[:3] == [3, 3, 2] and sorted(calls[3:]) == [3, 3]  # three chunks; the first two recomputed in backward


def test_chunked_logprobs_soft_cap_by_hand():
    head, hidden, index = _head_and_batch()
    capped = torch.tanh(head(hidden).float() / 2.0) * 2.0 / 0.5
    expected = capped.log_softmax(-1).gather(-1, index[..., None])[..., 0]
    lp, _ = chunked_logprobs(hidden, index, head, chunk_size=2, temperature=0.5, softcap=2.0)
    torch.testing.assert_close(lp, expected)
    assert float(lp.detach().min()) > -2 * 2.0 / 0.5 - math.log(11)  # capped logits span at most 2 * cap / temperature


def test_chunked_logprobs_pad_to_num_chunks_with_empty_ones():
    """Every process calls the head the same number of times (ZeRO-3), the short ones on empty chunks,
    forward and backward (every chunk but the last is recomputed); the values do not change."""
    head, hidden, index = _head_and_batch()
    calls = []
    head.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[1]))
    lp, _ = chunked_logprobs(hidden, index, head, chunk_size=4, num_chunks=4)
    lp.sum().backward()
    assert sorted(calls) == sorted([4, 3, 0, 0] + [4, 3, 0])
    torch.testing.assert_close(lp, _whole(head, hidden, index)[0])
    with pytest.raises(ValueError, match="num_chunks=1"):
        chunked_logprobs(hidden, index, head, chunk_size=4, num_chunks=1)


def test_chunked_logprobs_without_gradients_skip_checkpointing():
    head, hidden, index = _head_and_batch()
    calls = []
    head.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[1]))
    with torch.no_grad():
        lp, ent = chunked_logprobs(hidden, index, head, chunk_size=5, with_entropy=True)
    assert calls == [5, 2] and not lp.requires_grad
    torch.testing.assert_close(ent, _whole(head, hidden, index)[1])
