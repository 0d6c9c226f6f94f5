"""Loading the trainable policy: a causal LM (optionally NF4 4-bit) wrapped in a PEFT LoRA adapter."""

from __future__ import annotations

import torch

from grpo_ray.config import LearnerConfig, ModelConfig
from grpo_ray.models.paths import resolve_model_path


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def lora_config(model_cfg: ModelConfig):
    from peft import LoraConfig

    lc = model_cfg.lora
    return LoraConfig(
        r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=lc.target_modules,
        bias="none", task_type="CAUSAL_LM",
    )


def build_policy_model(model_cfg: ModelConfig, learner_cfg: LearnerConfig, *, device: torch.device):
    """Base model + fresh LoRA adapter (B = 0, so the policy starts equal to the base)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model_cfg.name_or_path)
    kwargs = dict(revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch_dtype(model_cfg.dtype, device)
    if model_cfg.load_in_4bit:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
        )
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, dtype=dtype, **kwargs)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=learner_cfg.gradient_checkpointing)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
        model.to(device)
    if learner_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    return get_peft_model(model, lora_config(model_cfg)), tokenizer
