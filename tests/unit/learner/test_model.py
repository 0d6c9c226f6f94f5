"""The policy model as the learner builds it: gradient checkpointing really recomputes (transformers does
so only in training mode), with dropout off, and the same logprobs and gradients as without it."""

from __future__ import annotations

import pytest
import torch

from grpo_ray.config import load_config
from grpo_ray.learner.model import build_policy_model

pytestmark = pytest.mark.unit


def _forward_backward(checkpointing: bool, lora: bool):
    cfg = load_config(None, [f"learner.gradient_checkpointing={str(checkpointing).lower()}",
                             f"model.lora.enabled={str(lora).lower()}", "model.dtype=float32"])
    torch.manual_seed(0)
    model, _ = build_policy_model(cfg.model, cfg.learner, device=torch.device("cpu"))
    layer = next(m for m in model.modules() if type(m).__name__.endswith("DecoderLayer"))
    calls = []
    hook = layer.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))  # recompute may stop early
    ids = torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    logits = model(input_ids=ids, use_cache=False).logits
    logits.log_softmax(-1).gather(-1, ids[..., None]).sum().backward()
    hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return model, len(calls), logits.detach(), grads


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_gradient_checkpointing_recomputes_and_changes_nothing_else(lora):
    plain_model, plain_calls, plain_logits, plain_grads = _forward_backward(False, lora)
    model, calls, logits, grads = _forward_backward(True, lora)
    assert plain_calls == 1 and calls == 2  # the layer ran again in backward: its activations were not kept
    assert model.training and all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    torch.testing.assert_close(logits, plain_logits)
    assert grads.keys() == plain_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-4, atol=1e-6)
