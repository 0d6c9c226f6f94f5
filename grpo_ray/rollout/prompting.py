"""Turning chat-message prompts into token ids the same way in every engine."""

from __future__ import annotations

from typing import Optional

# A large odd multiplier spreads nearby (seed, index) pairs apart; any fixed mixing would do.
_SEED_STRIDE = 1_000_003


def encode_prompts(tokenizer, prompts: list[list[dict[str, str]]]) -> list[list[int]]:
    """Apply the model's chat template with the generation prompt: [B][P_b] token ids.

    A prompt that ends with an assistant message (an assistant prefix, see
    ``grpo_ray.data.prompts.PromptRecipe``) is continued instead: the template renders that
    message unclosed and adds no new turn (``continue_final_message``), so generation picks up
    right after the prefix.
    """
    out = []
    for messages in prompts:
        partial = bool(messages) and messages[-1]["role"] == "assistant"
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=not partial, continue_final_message=partial, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 may return an Encoding
            ids = ids["input_ids"]
        out.append(list(ids))
    return out


def per_prompt_seeds(seed: Optional[int], count: int) -> list[Optional[int]]:
    """One sampling seed per prompt, so results do not depend on how prompts are batched."""
    if seed is None:
        return [None] * count
    return [(seed * _SEED_STRIDE + i) % (2**31 - 1) for i in range(count)]
