"""encode_prompts: the chat template with a generation prompt, or an assistant prefix continued."""

from __future__ import annotations

import pytest

from grpo_ray.data.prompts import PromptRecipe
from grpo_ray.models.tiny import arithmetic_corpus, build_tokenizer
from grpo_ray.rollout.prompting import encode_prompts

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(arithmetic_corpus(200), vocab_size=300)


def test_plain_prompt_ends_with_the_generation_prompt(tokenizer):
    (ids,) = encode_prompts(tokenizer, [PromptRecipe("S").messages("2 + 2?")])
    assert tokenizer.decode(ids) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n"


def test_assistant_prefix_is_continued_not_closed(tokenizer):
    plain, prefixed = encode_prompts(tokenizer, [PromptRecipe("S").messages("2 + 2?"),
                                                 PromptRecipe("S", (), "<reasoning>\n").messages("2 + 2?")])
    text = tokenizer.decode(prefixed)
    assert text == tokenizer.decode(plain) + "<reasoning>\n"  # the trailing newline kept, no <|im_end|>
    assert prefixed[: len(plain)] == plain


def test_demonstration_turns_are_closed_and_the_question_follows(tokenizer):
    demo = ("1 + 1?", "<reasoning>\n1 + 1 = 2\n</reasoning>\n<answer>\n2\n</answer>")
    (ids,) = encode_prompts(tokenizer, [PromptRecipe("S", (demo,)).messages("2 + 2?")])
    text = tokenizer.decode(ids)
    assert text.endswith("<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n")
    assert f"<|im_start|>assistant\n{demo[1]}<|im_end|>\n" in text
