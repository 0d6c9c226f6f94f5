"""The GPU memory a learner rank's training state takes, before activations: a floor for the check that
stops a run which cannot fit its learners' GPUs, before any rank loads the model.

Counted per parameter the way DeepSpeed holds the state (the accounting of the ZeRO paper, Rajbhandari
et al. 2020, https://arxiv.org/abs/1910.02054, section 3.1):

- full fine-tuning under mixed precision (bf16 or fp16): weights and gradients in the compute dtype, an
  fp32 master copy and Adam's two fp32 moments: 2 + 2 + 12 = 16 bytes a parameter;
- full fine-tuning in float32: weights, gradients and the two moments: 4 + 4 + 8 = 16 bytes;
- LoRA: the frozen base's weights (half a byte a parameter in NF4); the adapter and its optimizer
  states are small beside them and not counted.

ZeRO-1 splits the optimizer states over the learner ranks, ZeRO-2 the gradients as well, ZeRO-3 the
weights too. Every rank still loads the whole model before DeepSpeed splits it, so a rank needs at
least the weights whatever the stage. Under full fine-tuning with ``algo.beta > 0`` the frozen
reference model adds its weights (split under ZeRO-3). Activations, the CUDA context and allocator
slack come on top: the figure is a floor, and the check refuses only a run whose floor is over the
GPU's memory.
"""

from __future__ import annotations

import functools
import math

GIB = 2**30
WEIGHT_BYTES = {"auto": 2.0, "bfloat16": 2.0, "float16": 2.0, "float32": 4.0}  # on GPUs "auto" is bfloat16
NF4_BYTES = 0.5


def weight_bytes(dtype: str, *, load_in_4bit: bool = False) -> float:
    """Bytes a parameter of the learner's base model takes on a GPU (``model.dtype``, ``model.load_in_4bit``)."""
    return NF4_BYTES if load_in_4bit else WEIGHT_BYTES[dtype]


def learner_state_bytes(num_params: int, *, weight_bytes: float, zero_stage: int, num_learners: int, lora: bool,
                        reference: bool = False) -> float:
    """Bytes of training state on each learner GPU, before activations (see the module docstring).

    >>> learner_state_bytes(8_000_000_000, weight_bytes=2, zero_stage=0, num_learners=8, lora=False) / 1e9
    128.0
    >>> learner_state_bytes(8_000_000_000, weight_bytes=2, zero_stage=3, num_learners=8, lora=False) / 1e9
    16.0
    """
    n = num_learners
    weights = num_params * weight_bytes
    if lora:
        return weights  # loaded whole on every rank, even where ZeRO-3 then splits it
    grads = num_params * weight_bytes
    optimizer = num_params * (8.0 if weight_bytes >= 4 else 12.0)  # fp32 moments (+ fp32 master weights)
    if zero_stage >= 1:
        optimizer /= n
    if zero_stage >= 2:
        grads /= n
    split_weights = weights / n if zero_stage >= 3 else weights
    held = split_weights + grads + optimizer + (split_weights if reference else 0.0)
    return max(weights, held)


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def memory_problem(num_params: int, gpu_bytes: int, *, dtype: str, load_in_4bit: bool, zero_stage: int,
                   num_learners: int, lora: bool, reference: bool = False) -> str | None:
    """One line naming the setting and what to change when the learners' training state cannot fit a
    GPU of ``gpu_bytes``, else None."""
    w = weight_bytes(dtype, load_in_4bit=load_in_4bit)
    need = learner_state_bytes(num_params, weight_bytes=w, zero_stage=zero_stage, num_learners=num_learners, lora=lora,
                               reference=reference)
    if need <= gpu_bytes:
        return None
    size = f"{num_params / 1e9:.2f}B parameters"
    have = f"the learners' GPUs hold {_gib(gpu_bytes)}"
    if lora:
        fix = ("set model.load_in_4bit=true "
               f"({_gib(learner_state_bytes(num_params, weight_bytes=NF4_BYTES, zero_stage=0, num_learners=1, lora=True))})"
               if not load_in_4bit else "use GPUs with more memory or a smaller model")
        return f"model.name_or_path: the base's {size} take {_gib(need)} on each learner GPU and {have}; {fix}"
    fixes = []
    if w * num_params <= gpu_bytes:  # ZeRO-3 helps only when a rank can load the whole model first
        stage3 = {"weight_bytes": w, "zero_stage": 3, "lora": False, "reference": reference}
        if zero_stage < 3 and learner_state_bytes(num_params, num_learners=num_learners, **stage3) <= gpu_bytes:
            fixes.append(f"set learner.zero_stage=3 ({_gib(learner_state_bytes(num_params, num_learners=num_learners, **stage3))} "
                         f"over the {num_learners} learners)")
        else:
            least = _fewest_learners(num_params, gpu_bytes, stage3)
            if least is not None:
                fixes.append(f"use learner.zero_stage=3 with learner.num_learners of at least {least}")
    lora_need = learner_state_bytes(num_params, weight_bytes=w, zero_stage=zero_stage, num_learners=num_learners, lora=True)
    if lora_need <= gpu_bytes:
        fixes.append(f"set model.lora.enabled=true ({_gib(lora_need)})")
    else:
        fixes.append("set model.lora.enabled=true model.load_in_4bit=true")
    precision = ("float32 weights, gradients and Adam moments" if w >= 4
                 else "bf16/fp16 weights and gradients, fp32 master weights and Adam moments")
    reference_part = ", plus the reference model for algo.beta > 0" if reference else ""
    return (f"learner.zero_stage={zero_stage}: full fine-tuning of {size} needs at least {_gib(need)} on each of "
            f"the {num_learners} learner GPU(s) ({precision}{reference_part}; activations extra) and {have}; "
            + " or ".join(fixes))


def _fewest_learners(num_params: int, gpu_bytes: int, stage3: dict) -> int | None:
    """The fewest ZeRO-3 learner ranks whose split state fits ``gpu_bytes`` (None: no number does)."""
    per_param = learner_state_bytes(1, num_learners=1, **stage3)  # ZeRO-3 splits every byte over the ranks
    floor = num_params * stage3["weight_bytes"]
    if floor > gpu_bytes:
        return None
    return max(1, math.ceil(num_params * per_param / gpu_bytes))


@functools.lru_cache(maxsize=8)
def count_parameters(model_path: str, *, revision: str | None = None, trust_remote_code: bool = False) -> int:
    """The parameter count of ``model_path`` from its config, built on the meta device: no weights are
    read (tied weights count once, as they are held)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path, revision=revision, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in model.parameters())
