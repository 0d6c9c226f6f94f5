"""The real-architecture paths on a real pretrained model: builtin:smollm2-135m-instruct (Llama: fused
q/k/v with 9 query and 3 KV heads, fused gate/up, tied embeddings, a real chat template).

- vLLM and transformers + PEFT agree on greedy text and logprobs under an adapter;
- the merged sync repacks Llama's fused layers exactly as vLLM's own reload path loads them;
- ``grpo-ray eval`` scores base and adapter on GSM8K's test split;
- ``grpo-ray serve`` answers through the adapter with the official openai client.

Kept short: one vLLM engine for the module, a handful of prompts, short completions. The built-in toy
model stays the fast model for every other test.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

QUESTIONS = ["Tom has 3 apples and buys 4 more. How many apples does he have?",
             "A book costs 12 dollars. How much do 3 books cost?",
             "Sara had 20 stickers and gave away 8. How many are left?"]


@pytest.fixture(scope="module")
def model_dir():
    from grpo_ray.models.paths import resolve_model_path

    try:
        return resolve_model_path("builtin:smollm2-135m-instruct")
    except (FileNotFoundError, ImportError) as err:
        pytest.skip(f"builtin:smollm2-135m-instruct is not available: {err}")


@pytest.fixture(scope="module")
def adapter_dir(model_dir, tmp_path_factory) -> Path:
    """A rank-8 all-linear adapter with random A and B, small enough to keep the model coherent, large
    enough to change its answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    out = tmp_path_factory.mktemp("smol_adapter")
    peft.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(str(out))
    return out


def prompts():
    from grpo_ray.data.prompts import PromptRecipe
    from grpo_ray.data.formats import get_tag_style

    recipe = PromptRecipe(get_tag_style("reasoning").system_prompt, (), "<reasoning>\n")
    return [recipe.messages(q) for q in QUESTIONS]


@pytest.fixture(scope="module")
def engine(model_dir):
    import gc
    import os

    import torch

    from grpo_ray.rollout.engines.base import EngineSpec
    from grpo_ray.rollout.engines.vllm_engine import VLLMEngine

    threads, env = torch.get_num_threads(), dict(os.environ)
    e = VLLMEngine(EngineSpec("vllm", model_dir, dtype="float32", max_model_len=512, lora={"r": 8}))
    yield e
    del e
    gc.collect()
    torch.set_num_threads(threads)
    os.environ.clear()
    os.environ.update(env)


def test_vllm_and_transformers_agree_under_an_adapter(engine, model_dir, adapter_dir) -> None:
    from grpo_ray.models.adapter_io import read_adapter_folder
    from grpo_ray.rollout.engines.hf_engine import HFEngine
    from grpo_ray.sync import WEIGHT_SYNCS
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    adapter = read_adapter_folder(adapter_dir, version=1)
    request = GenerationRequest(prompts(), SamplingConfig(n=1, temperature=0.0, max_tokens=24))
    base = engine.generate(request)
    WEIGHT_SYNCS.get("lora")().apply(engine, adapter, fetch=None)
    assert engine.info()["merge_path"] == "repack"  # Llama's fused q/k/v and gate/up, packed again
    tuned = engine.generate(request)
    hf = HFEngine(model_dir, dtype="float32", lora=adapter.peft_config, device="cpu")
    hf.apply_lora(adapter)
    reference = hf.generate(request)
    assert tuned.completion_texts == reference.completion_texts
    for a, b in zip(tuned.sampling_logprobs, reference.sampling_logprobs):
        assert max(abs(x - y) for x, y in zip(a, b)) < 2e-3
    # the adapter matters: it changes the greedy text or, where the text stays, moves its logprobs far
    # beyond the parity tolerance above (an adapter that was not applied moves nothing)
    moved = max(abs(x - y) for a, b in zip(tuned.sampling_logprobs, base.sampling_logprobs) for x, y in zip(a, b))
    assert tuned.completion_texts != base.completion_texts or moved > 0.05, moved


def test_the_merge_equals_vllms_reload_on_llama(engine, adapter_dir, monkeypatch) -> None:
    from grpo_ray.models.adapter_io import read_adapter_folder
    from grpo_ray.rollout.engines import vllm_worker
    from grpo_ray.sync import WEIGHT_SYNCS
    from grpo_ray.wire import GenerationRequest, SamplingConfig

    request = GenerationRequest(prompts(), SamplingConfig(n=1, temperature=0.0, max_tokens=24))
    adapter = read_adapter_folder(adapter_dir, version=2)
    WEIGHT_SYNCS.get("lora")().apply(engine, adapter, fetch=None)
    repacked = engine.generate(request)
    monkeypatch.setattr(vllm_worker.MergedLoRAExtension, "_grpo_ray_repack", lambda self, *args: False)
    adapter.version = 3
    WEIGHT_SYNCS.get("lora")().apply(engine, adapter, fetch=None)
    assert engine.info()["merge_path"] == "reload"
    reloaded = engine.generate(request)
    assert repacked.completion_texts == reloaded.completion_texts
    assert repacked.sampling_logprobs == reloaded.sampling_logprobs


def test_eval_scores_base_and_adapter_on_gsm8k(adapter_dir, shared_data, tmp_path) -> None:
    out = tmp_path / "eval"
    done = subprocess.run(
        [grpo_ray_exe(), "eval", "--model", "builtin:smollm2-135m-instruct", "--adapter", str(adapter_dir), "--compare-base",
         "--dataset", "gsm8k", "--data-dir", str(shared_data / "gsm8k"), "--limit", "4", "--max-tokens", "32",
         "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["count"] == 4 and set(results["results"]) == {"base", "tuned"}
    assert "| hard correctness |" in done.stdout


def grpo_ray_exe() -> str:
    return shutil.which("grpo-ray") or str(Path(sys.executable).parent / "grpo-ray")


def test_serve_answers_through_the_adapter_with_the_openai_client(adapter_dir) -> None:
    from openai import OpenAI

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([grpo_ray_exe(), "serve", "--model", "builtin:smollm2-135m-instruct", "--adapter",
                             f"smol={adapter_dir}", "--port", str(port), "--max-model-len", "512"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        deadline = time.time() + 300
        while True:
            try:
                models = {m.id for m in client.models.list().data}
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                assert proc.poll() is None, proc.stdout.read()[-3000:]
                assert time.time() < deadline, "the server did not come up"
                time.sleep(2)
        assert {"smollm2-135m-instruct", "smol"} <= models
        reply = client.chat.completions.create(model="smol", messages=prompts()[0][:-1], max_tokens=24, temperature=0)
        assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
