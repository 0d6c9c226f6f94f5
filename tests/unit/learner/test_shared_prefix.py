"""The learner's shared-prompt forward: each distinct prompt runs once and its KV cache serves the
group. Logits and gradients must equal the full forward's."""

from __future__ import annotations

import pytest
import torch

from grpo_ray.learner.forward import completion_logits
from grpo_ray.learner.padding import pad_rows, unique_prompts

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.paths import resolve_model_path

    return AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:arithmetic-base"), dtype=torch.float32)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (7, 9)]  # uneven: left padding
    completions = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (4, 6, 2, 5, 5, 3)]
    return pad_rows([p for p in prompts for _ in range(3)], completions, 0)


def test_unique_prompts(batch) -> None:
    first, inverse = unique_prompts(batch)
    assert first.tolist() == [0, 3] and inverse.tolist() == [0, 0, 0, 1, 1, 1]


def _grads(model, logits_fn, batch):
    model.zero_grad()
    logits = logits_fn().float()
    lp = torch.log_softmax(logits, -1).gather(-1, batch.completion_ids[..., None])[..., 0]
    (lp * batch.completion_mask).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_same_logits_and_gradients_as_full_forward(model, batch) -> None:
    full, g_full = _grads(model, lambda: completion_logits(model, batch, share_prefix=False), batch)
    shared, g_shared = _grads(model, lambda: completion_logits(model, batch, share_prefix=True), batch)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(shared[mask], full[mask], rtol=0, atol=2e-5)
    assert g_full.keys() == g_shared.keys() and len(g_full) > 0
    for name, grad in g_full.items():
        scale = float(grad.abs().max()) + 1e-12
        assert float((g_shared[name] - grad).abs().max()) / scale < 1e-4, name
