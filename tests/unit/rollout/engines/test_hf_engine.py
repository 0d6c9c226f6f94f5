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
