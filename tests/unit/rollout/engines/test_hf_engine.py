"""The transformers fallback engine decodes greedily at temperature 0 (as vLLM does), so
``grpo-ray eval --engine hf`` works."""

from __future__ import annotations

import pytest
import torch

from grpo_ray.data.loader import load_prompt_dataset
from grpo_ray.models.paths import resolve_model_path
from grpo_ray.rollout.engines.hf_engine import HFEngine
from grpo_ray.wire import GenerationRequest, SamplingConfig

pytestmark = pytest.mark.unit


def test_temperature_zero_is_greedy() -> None:
    path = resolve_model_path("builtin:arithmetic-base")
    engine = HFEngine(path, dtype="float32", device="cpu")
    prompts = [r["prompt"] for r in load_prompt_dataset("arithmetic", split="test", limit=3)]
    batch = engine.generate(GenerationRequest(prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=40)))
    for prompt, text in zip(prompts, batch.completion_texts):
        ids = engine.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)
        with torch.no_grad():
            out = engine.model.generate(**ids, do_sample=False, max_new_tokens=40,
                                        pad_token_id=engine.tokenizer.pad_token_id)
        assert text == engine.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert all(r in ("stop", "length") for r in batch.finish_reasons)


def test_level_2_sleep_frees_the_weights_until_a_full_load_writes_every_one() -> None:
    """A colocated full fine-tuning engine: after sleep(2) its weights are gone, a load wakes it and writes
    them, and it samples as before; asked to sample before the load, or after a load that missed a
    weight, it refuses instead of sampling from freed memory."""
    path = resolve_model_path("builtin:arithmetic-base")
    engine = HFEngine(path, dtype="float32", device="cpu")
    prompts = [r["prompt"] for r in load_prompt_dataset("arithmetic", split="test", limit=2)]
    request = GenerationRequest(prompts, SamplingConfig(n=2, temperature=1.0, max_tokens=12, seed=3))
    before = engine.generate(request)
    weights = {n: p.detach().clone() for n, p in engine.model.named_parameters()}

    engine.sleep(2)
    assert all(p.numel() == 0 for p in engine.model.parameters())  # freed
    with pytest.raises(RuntimeError, match="before new weights were loaded"):
        engine.generate(request)
    engine.load_weights([weights])
    after = engine.generate(request)
    assert after.completion_ids == before.completion_ids and after.sampling_logprobs == before.sampling_logprobs

    engine.sleep(2)
    missed = dict(weights)
    missed.pop(next(iter(missed)))
    engine.load_weights([missed])
    with pytest.raises(RuntimeError, match="were not loaded again"):
        engine.generate(request)


def test_level_1_sleep_keeps_the_weights_and_a_lora_policy_cannot_sleep_deeper() -> None:
    path = resolve_model_path("builtin:arithmetic-base")
    engine = HFEngine(path, dtype="float32", device="cpu", lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})
    engine.sleep(1)
    assert all(p.numel() for p in engine.model.parameters())
    with pytest.raises(ValueError, match="use level 1"):
        engine.sleep(2)
