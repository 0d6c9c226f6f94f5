"""Prompt-length statistics with a real (tiny, offline-built) tokenizer and chat template."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from grpo_ray.data import load_prompt_dataset, prompt_length_stats
from grpo_ray.data.prompts import build_prompt

pytestmark = pytest.mark.unit

# One token per whitespace-separated word; the generation prompt adds one more token.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "<|system|>": 1, "<|user|>": 2, "<|assistant|>": 3, "a": 4, "b": 5}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_stats_match_hand_counts(tokenizer) -> None:
    # system "a b" (2) + user k words + 3 role markers: lengths 6, 7, ..., 25 for k = 1..20
    prompts = [build_prompt("a b", " ".join(["w"] * k)) for k in range(20, 0, -1)]
    stats = prompt_length_stats({"prompt": prompts}, tokenizer, max_prompt_tokens=20)
    assert stats == {"count": 20, "mean": 15.5, "p50": 15, "p95": 24, "max": 25, "n_over_limit": 5}


def test_no_limit_no_over_limit_count(tokenizer) -> None:
    stats = prompt_length_stats({"prompt": [build_prompt("a", "b")]}, tokenizer)
    assert stats == {"count": 1, "mean": 5.0, "p50": 5, "p95": 5, "max": 5}


def test_on_a_loaded_dataset(tokenizer) -> None:
    ds = load_prompt_dataset("arithmetic", split="test", system_prompt="a b")
    stats = prompt_length_stats(ds, tokenizer, max_prompt_tokens=10_000)
    words = [len(q.split()) + 5 for q in ds["question"]]
    assert stats["count"] == 200 and stats["max"] == max(words) and stats["n_over_limit"] == 0
    assert stats["mean"] == pytest.approx(sum(words) / len(words))


def test_empty_dataset_is_an_error(tokenizer) -> None:
    with pytest.raises(ValueError, match="no prompts"):
        prompt_length_stats({"prompt": []}, tokenizer)
