"""The real-architecture paths on a real pretrained model: builtin:smollm2-135m-instruct (Llama: fused
q/k/v with 9 query and 3 KV heads, fused gate/up, tied embeddings, a real chat template).

- vLLM and transformers + PEFT agree on greedy text and logprobs under an adapter;
- the merged sync repacks Llama's fused layers exactly as vLLM's own reload path loads them;
- ``grpo-ray serve`` answers through the adapter with the official openai client, and speaks OpenAI's tool
  protocol for a run trained with the calculator (``tools=`` in, ``tool_calls`` out), or runs the
  calculator itself (``--run-tools``).

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


def grpo_ray_exe() -> str:
    return shutil.which("grpo-ray") or str(Path(sys.executable).parent / "grpo-ray")


@pytest.fixture(scope="module")
def tools_run(model_dir, tmp_path_factory) -> Path:
    """A training output dir of the calculator recipe (examples/smollm2_arithmetic_tools_cpu.yaml) whose
    adapter is still the base (B = 0): what the server must ask as training did, with its tools."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from grpo_ray.config import load_config

    out = tmp_path_factory.mktemp("tools_run")
    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "smollm2_arithmetic_tools_cpu.yaml",
                      [f"trainer.output_dir={out}"])
    (out / "config.yaml").write_text(cfg.to_yaml())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules="all-linear")).save_pretrained(str(out / "adapter"))
    return out / "adapter"


def test_serve_answers_through_the_adapter_with_the_openai_client(adapter_dir, tools_run) -> None:
    from openai import OpenAI

    from grpo_ray.tools import resolve_tool

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([grpo_ray_exe(), "serve", "--model", "builtin:smollm2-135m-instruct", "--adapter",
                             f"smol={adapter_dir}", "--adapter", f"calc={tools_run}", "--run-tools", "--port", str(port),
                             "--max-model-len", "1280"],
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
        assert {"smollm2-135m-instruct", "smol", "calc"} <= models
        reply = client.chat.completions.create(model="smol", messages=prompts()[0][:-1], max_tokens=24, temperature=0)
        assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
        # OpenAI's tool protocol: the run's recipe starts the call, the client gets tool_calls and runs them
        question = [{"role": "user", "content": "Tom has 17 boxes with 23 apples in each. How many apples does Tom have?"}]
        calc = resolve_tool("calculator").schema
        first = client.chat.completions.create(model="calc", messages=question, tools=[calc], max_tokens=64, temperature=0)
        call = first.choices[0].message.tool_calls[0]
        assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "calculator"
        result = resolve_tool("calculator").fn(**json.loads(call.function.arguments))
        answer = client.chat.completions.create(
            model="calc", tools=[calc], max_tokens=64, temperature=0,
            messages=[*question, first.choices[0].message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": result}])
        assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
        # --run-tools: no tools in the request, the server runs the run's calculator and returns the transcript
        served = client.chat.completions.create(model="calc", messages=question, max_tokens=64, temperature=0)
        transcript = served.model_extra["transcript"]
        assert [m["role"] for m in transcript][:2] == ["assistant", "tool"]
        assert transcript[1]["content"] == result
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
