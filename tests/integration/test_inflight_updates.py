"""In-flight weight updates through a real rollout actor (vLLM on CPU, the session's tiny engine): a
version offered while a generation runs is loaded between decoding steps once its weights are there,
each token records the version that sampled it, and a worker never goes back to an older version of
the line; then an async run with in-flight updates keeps its lag bound. (That the tokens after the
switch are the new weights' own is tested on the engine itself, in test_vllm_merge.py.)"""

from __future__ import annotations

import time

import pytest
import ray

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import tiny_config

pytestmark = pytest.mark.integration

LINE = "inflight-test"


def adapters(model_dir) -> list:
    """Two different random adapters of the tiny engine's LoRA shape (r=8, alpha=16, every linear layer)."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from grpo_ray.models.adapter_io import peft_config_dict
    from grpo_ray.wire import LoraAdapter

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=8, lora_alpha=16,
                                                                                       target_modules="all-linear"))
    config = peft_config_dict(model.peft_config["default"])
    out = []
    for version in (1, 2):
        g = torch.Generator().manual_seed(version)
        out.append(LoraAdapter(version, {k: torch.randn(v.shape, generator=g) * 0.3
                                         for k, v in get_peft_model_state_dict(model).items()}, config))
    return out


def test_an_offered_version_is_taken_between_decoding_steps_and_never_undone(tiny_vllm, tiny_model_dir) -> None:
    from grpo_ray.wire import GenerationRequest, SamplingConfig, WeightsHandle

    worker = tiny_vllm.rollouts[0]
    first, second = adapters(tiny_model_dir)
    v1 = WeightsHandle(1, ray.put(first), LINE, "lora")
    v2 = WeightsHandle(2, ray.put(second), LINE, "lora")
    prompts = [[{"role": "user", "content": f"What is {a} + {a}?"}] for a in range(8)]
    request = GenerationRequest(prompts, SamplingConfig(n=4, temperature=1.0, max_tokens=400, seed=3),
                                seeds=list(range(8)), weights=v1, inflight_updates=True)
    running = worker.generate.remote(request)  # about 2.5 s of decoding steps
    time.sleep(0.5)
    assert ray.get(worker.offer_weights.remote(v2)) is True  # answered beside the generation (its own concurrency group)
    assert not ray.wait([running], timeout=0)[0], "the generation ended before version 2 was offered"
    batch = ray.get(running)
    assert batch.policy_version == 1 and ray.get(worker.version.remote()) == 2
    assert all(v == sorted(v) and set(v) <= {1, 2} and v[0] == 1 for v in batch.token_versions)
    switched = [v for v in batch.token_versions if set(v) == {1, 2}]
    assert switched, "no completion was still running when version 2 arrived"

    # an in-flight shard under version 1 keeps version 2; one without in-flight updates goes back to 1
    kept = ray.get(worker.generate.remote(GenerationRequest(prompts[:2], SamplingConfig(n=2, max_tokens=8), seeds=[0, 1],
                                                             weights=v1, inflight_updates=True)))
    assert {v for row in kept.token_versions for v in row} == {2}
    back = ray.get(worker.generate.remote(GenerationRequest(prompts[:2], SamplingConfig(n=2, max_tokens=8), seeds=[0, 1],
                                                             weights=v1)))
    assert back.policy_version == 1 and back.token_versions is None


def test_an_async_run_with_inflight_updates_keeps_its_lag_bound(tiny_vllm, tiny_model_dir, tmp_path) -> None:
    cfg = tiny_config(tiny_model_dir, tmp_path, "trainer.async_rollout=true", "trainer.max_policy_lag=1",
                      "rollout.inflight_weight_updates=true", "trainer.steps=4", "rollout.max_completion_tokens=64")
    trainer = GRPOTrainer(cfg).setup(workers=tiny_vllm)
    try:
        history = trainer.train()
    finally:
        trainer.workers.stop_learners()
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert "rollout/token_lag_mean" not in history[0]  # generated while nothing updated
    for h in history[1:]:  # generated ahead, during the update before
        assert 0 <= h["policy_version_lag"] <= 1 and 0 <= h["rollout/token_lag_mean"] <= h["policy_version_lag"]
        assert 0 <= h["rollout/updated_in_flight_frac"] <= 1
