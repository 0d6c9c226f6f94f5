"""The shipped base model ``builtin:arithmetic-base`` (built by scripts/build_builtin_model.py)."""

from __future__ import annotations

import pytest

from grpo_ray.data.arithmetic import heldout_problems
from grpo_ray.data.prompts import build_prompt
from grpo_ray.data.formats import TAG_STYLES
from grpo_ray.models.paths import resolve_model_path
from grpo_ray.rewards.formatting import strict_format_reward

pytestmark = pytest.mark.unit

STYLE = TAG_STYLES["reasoning"]


@pytest.fixture(scope="module")
def base():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path("builtin:arithmetic-base")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_head_dim_is_what_vllm_cpu_needs(base):
    model, _ = base
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert head_dim >= 32
    assert next(model.parameters()).dtype.is_floating_point


def test_tokenizer_round_trips_a_reasoning_completion(base):
    _, tokenizer = base
    text = STYLE.render("23 + 48 = 71\n71 - 15 = 56", "56")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "<|im_end|>"


def test_chat_template_renders_the_generation_prompt(base):
    _, tokenizer = base
    question = heldout_problems(1)[0]["question"]
    text = tokenizer.apply_chat_template(
        build_prompt(STYLE.system_prompt, question), add_generation_prompt=True, tokenize=False
    )
    assert text.startswith("<|im_start|>system\n" + STYLE.system_prompt + "<|im_end|>\n")
    assert text.endswith(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")


def test_greedy_completions_follow_the_strict_format(base):
    import torch

    model, tokenizer = base
    problems = heldout_problems(20)
    prompts = [
        tokenizer.apply_chat_template(build_prompt(STYLE.system_prompt, p["question"]), add_generation_prompt=True,
                                      tokenize=False)
        for p in problems
    ]
    batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "left"
    # A 3M-parameter model's matmuls are too small to share: on a busy two-core machine a second
    # thread made this generate ~10x slower (13 s instead of 1.4 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            out = model.generate(**batch, do_sample=False, max_new_tokens=48, pad_token_id=tokenizer.pad_token_id)
    finally:
        torch.set_num_threads(threads)
    completions = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    formatted = sum(r > 0 for r in strict_format_reward(None, completions))
    assert formatted >= 0.8 * len(problems), completions
