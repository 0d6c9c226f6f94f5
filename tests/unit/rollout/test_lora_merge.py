"""Merging LoRA into base weights, checked against PEFT's own merge_and_unload."""

from __future__ import annotations

import pytest
import torch

from grpo_ray.rollout.lora_merge import lora_pairs, lora_scale, merged_weights

pytestmark = pytest.mark.unit


def _tiny_peft(r=4, alpha=8, rslora=False):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    base = Qwen2ForCausalLM(cfg)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear", use_rslora=rslora))
    with torch.no_grad():  # B starts at zero; give it values so the merge has something to add
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return model, base_state


@pytest.mark.parametrize("rslora", [False, True])
def test_merge_equals_peft_merge_and_unload(rslora: bool) -> None:
    from peft import get_peft_model_state_dict

    model, base_state = _tiny_peft(rslora=rslora)
    tensors = get_peft_model_state_dict(model)
    config = model.peft_config["default"].to_dict()
    ours = dict(merged_weights(base_state, tensors, config))
    reference = model.merge_and_unload().state_dict()
    assert len(ours) == 7  # q k v o gate up down of the one layer
    for name, weight in ours.items():
        torch.testing.assert_close(weight, reference[name], rtol=0, atol=1e-6)
        assert not torch.equal(weight, base_state[name])  # the adapter did change it


def test_scale_and_names() -> None:
    assert lora_scale({"r": 16, "lora_alpha": 32}) == 2.0
    assert lora_scale({"r": 16, "lora_alpha": 32, "use_rslora": True}) == 8.0
    a, b = torch.zeros(2, 3), torch.zeros(4, 2)
    tensors = {"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": a,
               "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight": b}
    assert list(lora_pairs(tensors)) == ["model.layers.0.mlp.up_proj"]


def test_merge_casts_to_the_served_dtype_from_the_original() -> None:
    base = {"m.weight": torch.ones(2, 2, dtype=torch.float16)}
    tensors = {"m.lora_A.weight": torch.full((1, 2), 1e-3), "m.lora_B.weight": torch.ones(2, 1)}
    (name, w), = merged_weights(base, tensors, {"r": 1, "lora_alpha": 1}, dtype=torch.float32)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.full((2, 2), 1.001))  # not rounded through float16


@pytest.mark.parametrize("tensors,message", [
    ({"m.lora_A.weight": torch.zeros(1, 2)}, "missing lora_A or lora_B"),
    ({"m.modules_to_save.weight": torch.zeros(1)}, "not a LoRA A/B matrix"),
])
def test_unsupported_adapters_rejected(tensors, message) -> None:
    with pytest.raises(ValueError, match=message):
        merged_weights({"m.weight": torch.zeros(2, 2)}, tensors, {"r": 1, "lora_alpha": 1})


def test_missing_base_weight_named() -> None:
    tensors = {"x.lora_A.weight": torch.zeros(1, 2), "x.lora_B.weight": torch.zeros(2, 1)}
    with pytest.raises(KeyError, match="'x'"):
        merged_weights({}, tensors, {"r": 1, "lora_alpha": 1})


def test_wrong_shape_named() -> None:
    tensors = {"m.lora_A.weight": torch.zeros(1, 3), "m.lora_B.weight": torch.zeros(2, 1)}
    with pytest.raises(ValueError, match=r"^m: LoRA B \(2, 1\) @ A \(1, 3\) does not match weight \(2, 2\)$"):
        merged_weights({"m.weight": torch.zeros(2, 2)}, tensors, {"r": 1, "lora_alpha": 1})


def test_merge_into_rows_of_a_fused_weight_matches_the_plain_merge() -> None:
    from grpo_ray.rollout.lora_merge import merge_lora

    torch.manual_seed(0)
    w0, a, b = torch.randn(6, 4), torch.randn(2, 4), torch.randn(6, 2)
    fused = torch.zeros(10, 4)
    merge_lora(w0, a, b, 0.5, out=fused[2:8])
    assert torch.equal(fused[2:8], merge_lora(w0, a, b, 0.5))
    assert torch.equal(fused[:2], torch.zeros(2, 4)) and torch.equal(fused[8:], torch.zeros(2, 4))
    torch.testing.assert_close(fused[2:8], w0 + 0.5 * b @ a)
