"""Merging a PEFT LoRA adapter into base weights: ``W = W0 + scale * B @ A`` per targeted module.

A rollout engine that serves the merged weights generates at bare-model speed (vLLM's LoRA kernels
are several times slower on CPU; see docs/benchmarks.md), while only the adapter crosses the network: each
rollout node merges locally against its own copy of the base weights. Pure torch, no vLLM.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

_PEFT_PREFIX = "base_model.model."


def lora_scale(peft_config: Mapping[str, Any]) -> float:
    """``alpha / r``, or ``alpha / sqrt(r)`` under rsLoRA (PEFT's ``use_rslora``)."""
    r, alpha = int(peft_config["r"]), float(peft_config.get("lora_alpha", peft_config["r"]))
    return alpha / math.sqrt(r) if peft_config.get("use_rslora") else alpha / r


def lora_pairs(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """PEFT adapter tensors -> {base module name (HF naming): (A [r, in], B [out, r])}.

    ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` belongs to module
    ``model.layers.0.self_attn.q_proj``. Tensors other than LoRA A/B (e.g. ``modules_to_save``
    copies) are rejected: a merge cannot represent them faithfully.
    """
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        key = name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                module = key.split(marker)[0]
                pairs.setdefault(module, {})[part] = tensor
                break
        else:
            raise ValueError(f"adapter tensor {name!r} is not a LoRA A/B matrix; merged sync supports LoRA only")
    incomplete = sorted(m for m, p in pairs.items() if len(p) != 2)
    if incomplete:
        raise ValueError(f"adapter modules missing lora_A or lora_B: {', '.join(incomplete[:3])}")
    return {m: (p["lora_A"], p["lora_B"]) for m, p in pairs.items()}


def check_lora_shapes(module: str, w0: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """ValueError naming ``module`` unless ``B @ A`` has W0's shape."""
    if (b.shape[0], a.shape[1]) != tuple(w0.shape) or a.shape[0] != b.shape[1]:
        raise ValueError(f"{module}: LoRA B {tuple(b.shape)} @ A {tuple(a.shape)} does not match weight {tuple(w0.shape)}")


def merge_lora(w0: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """``W0 + scale * B @ A`` in float32, as one fused multiply-add (into ``out`` when given: a float32
    tensor of W0's shape, e.g. the rows of a fused q/k/v weight). Every merge path uses this, so they
    agree to the bit."""
    return torch.addmm(w0.float(), b.float().to(w0.device), a.float().to(w0.device), alpha=scale, out=out)


def merged_weights(
    base: Mapping[str, torch.Tensor],
    tensors: Mapping[str, torch.Tensor],
    peft_config: Mapping[str, Any],
    dtype: torch.dtype | None = None,
) -> list[tuple[str, torch.Tensor]]:
    """``[(module + ".weight", W0 + scale * B @ A)]`` for every module the adapter targets.

    ``base`` maps ``module + ".weight"`` to the original (unmerged) weight. The sum is taken in
    float32 and cast to ``dtype`` (the served dtype; default the base weight's), always from the
    original weights, so repeated syncs never accumulate rounding error.
    """
    scale = merge_scale(peft_config)
    out = []
    for module, (a, b) in sorted(lora_pairs(tensors).items()):
        key = module + ".weight"
        if key not in base:
            raise KeyError(f"adapter targets {module!r}, but the base model has no weight {key!r}")
        check_lora_shapes(module, base[key], a, b)
        out.append((key, merge_lora(base[key], a, b, scale).to(dtype or base[key].dtype)))
    return out


def merge_scale(peft_config: Mapping[str, Any]) -> float:
    """:func:`lora_scale`, for an adapter a merge can represent (``nn.Linear`` layers only)."""
    if peft_config.get("fan_in_fan_out"):
        raise ValueError("adapter uses fan_in_fan_out (Conv1D layers); merged sync supports nn.Linear only")
    return lora_scale(peft_config)


def stream_merged_weights(
    folder: str,
    tensors: Mapping[str, torch.Tensor],
    peft_config: Mapping[str, Any],
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    untargeted: bool = False,
):
    """``(module + ".weight", W0 + scale * B @ A)`` for every module the adapter targets, one at a time
    (``untargeted``: every other checkpoint weight too, as it is, to restore a model whose weights were
    replaced wholesale):
    each ``W0`` is read from the checkpoint's safetensors in ``folder`` onto ``device``, merged there in
    float32 (:func:`merge_lora`) and cast to ``dtype``, so no copy of the base weights is kept anywhere
    and only one layer's weights are extra at any moment. Every shape is checked before the first
    weight is yielded: a bad adapter leaves the consumer's weights whole.

    Raises:
        KeyError: the adapter targets a module the checkpoint has no weight for.
        ValueError: a LoRA pair's shape does not match its weight (naming the module).
    """
    from pathlib import Path

    from safetensors import safe_open

    pairs = lora_pairs(tensors)
    scale = merge_scale(peft_config)
    where: dict[str, Path] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        for key in shapes:
            where.setdefault(key, file)
        for module, (a, b) in pairs.items():
            key = module + ".weight"
            if key in shapes and where[key] == file:
                check_lora_shapes(module, torch.empty(shapes[key], device="meta"), a, b)
    missing = sorted(m for m in pairs if m + ".weight" not in where)
    if missing:
        raise KeyError(f"adapter targets {missing[0]!r}, but the checkpoint in {folder} has no weight {missing[0] + '.weight'!r}")

    def merged():
        for module, (a, b) in sorted(pairs.items()):
            key = module + ".weight"
            with safe_open(str(where[key]), framework="pt", device=str(device)) as f:
                w0 = f.get_tensor(key)
            yield key, merge_lora(w0, a.to(device), b.to(device), scale).to(dtype)
        if untargeted:
            targeted = {m + ".weight" for m in pairs}
            for key, file in sorted(where.items()):
                if key not in targeted:
                    with safe_open(str(file), framework="pt", device=str(device)) as f:
                        yield key, f.get_tensor(key).to(dtype)

    return merged()
