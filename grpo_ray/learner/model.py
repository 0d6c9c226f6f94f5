"""Loading the trainable policy: a causal LM (optionally NF4 4-bit) with a PEFT LoRA adapter, or the
whole model for full fine-tuning, plus the frozen reference model that full fine-tuning needs."""

from __future__ import annotations

from typing import Union

import torch

from grpo_ray.config import LearnerConfig, ModelConfig
from grpo_ray.models.adapter_io import peft_lora_config
from grpo_ray.models.paths import resolve_model_path


def torch_dtype(name: str, device: Union[torch.device, str]) -> torch.dtype:
    """``model.dtype`` as a torch dtype: bfloat16 on GPUs and float32 on CPU for "auto"."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if name == "auto":
        return torch.bfloat16 if kind == "cuda" else torch.float32
    return getattr(torch, name)


def _load_base(model_cfg: ModelConfig, device: torch.device, dtype: torch.dtype, *, quantized: bool):
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(model_cfg.name_or_path)
    kwargs = dict(revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code)
    if quantized:
        from grpo_ray.models.nf4 import nf4_config

        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=nf4_config(dtype), dtype=dtype,
                                                     device_map={"": str(device)}, **kwargs)
        _keep_4bit_layers_trainable(model)
        return model
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).to(device)


def _keep_4bit_layers_trainable(model) -> None:
    """On CPUs with AVX-512 BF16, bitsandbytes repacks a 4-bit layer's weight into an inference-only
    layout the first time it runs in eval mode without gradients, and keeps it: every later forward,
    training ones included, then takes a kernel without autograd and fails ("a view of a leaf Variable
    ... in-place operation"). The learner alternates no-grad and training forwards, so the repack is
    turned off; the layers then use bitsandbytes' standard dequantize-and-matmul path (the one the
    NF4-rounded rollout checkpoint equals)."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def build_policy_model(model_cfg: ModelConfig, learner_cfg: LearnerConfig, *, device: torch.device):
    """The trainable policy and its tokenizer. With LoRA: base + a fresh adapter (B = 0, so the policy
    starts equal to the base); without: the whole model, every weight trainable."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model_cfg.name_or_path), revision=model_cfg.revision,
                                              trust_remote_code=model_cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch_dtype(model_cfg.dtype, device)
    model = _load_base(model_cfg, device, dtype, quantized=model_cfg.load_in_4bit)
    if model_cfg.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=learner_cfg.gradient_checkpointing)
        # prepare_model_for_kbit_training upcasts every non-4-bit weight to float32; the run computes in
        # ``dtype`` (DeepSpeed's bf16 mode is chosen from it), so the frozen weights go back to it
        for param in model.parameters():
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
    if learner_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if model_cfg.lora.enabled:
            model.enable_input_require_grads()
        # transformers recomputes activations only in training mode (from_pretrained returns eval mode, where
        # the setting silently does nothing); dropout stays off, so the policy trains as it samples
        model.train()
        disable_dropout(model)
    model.config.use_cache = False
    if not model_cfg.lora.enabled:
        return model, tokenizer
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(model_cfg)), tokenizer


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off in every layer, whatever the module's mode (as TRL's ``disable_dropout_in_model``), the
    attention's too (kept as a float on attention modules and applied only in training mode)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def build_reference_model(model_cfg: ModelConfig, *, device: torch.device):
    """The frozen starting policy, for the KL term of full fine-tuning (with LoRA the reference is the
    policy with its adapter disabled, and no second copy exists)."""
    model = _load_base(model_cfg, device, torch_dtype(model_cfg.dtype, device), quantized=False)
    model.config.use_cache = False
    model.requires_grad_(False)
    return model.eval()
