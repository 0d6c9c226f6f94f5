"""NF4 4-bit base models (QLoRA, ``model.load_in_4bit``), held the same way by learner and rollout engine.

The learner loads the base through bitsandbytes NF4 (double quantization, compute in the run's dtype):
every targeted linear weight ``W`` is stored as ``nf4(W)`` and multiplied as ``dequantize(nf4(W))``.
If the rollout engine sampled from the original ``W`` instead, the gap between sampler and learner
would be systematic (every token's logprob off in the same direction), not noise.

vLLM 0.32 has no bitsandbytes support (it was removed upstream), so the vLLM engine serves an
*NF4-rounded* copy of the checkpoint: each weight that bitsandbytes quantizes is replaced by exactly
``dequantize(nf4(W))`` as bitsandbytes computes it, the rest kept as loaded. Sampler and learner then
multiply by the same numbers. The copy is made once per node and model (under ``$GRPO_RAY_CACHE``,
default ``~/.cache/grpo_ray``) and has the base's size in the served dtype: the rollout GPUs save no
memory, the learners do (that is where QLoRA's memory goes). The transformers engine loads NF4 itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

NF4_SETTINGS = {"quant_type": "nf4", "double_quant": True, "blocksize": 64}


def cache_root() -> Path:
    return Path(os.environ.get("GRPO_RAY_CACHE") or Path.home() / ".cache" / "grpo_ray")


def nf4_config(compute_dtype):
    """The ``BitsAndBytesConfig`` the learner and the transformers engine both load with."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=NF4_SETTINGS["quant_type"],
        bnb_4bit_use_double_quant=NF4_SETTINGS["double_quant"], bnb_4bit_compute_dtype=compute_dtype,
    )


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def rounded_checkpoint_dir(model_path: str, *, dtype: str, device: str, revision: Optional[str] = None) -> Path:
    """Where the NF4-rounded copy of ``model_path`` lives (whether or not it exists yet)."""
    import bitsandbytes

    source = str(Path(model_path).resolve()) if Path(model_path).exists() else model_path
    key = json.dumps([source, revision, str(_torch_dtype(dtype, device)), bitsandbytes.__version__, NF4_SETTINGS])
    name = Path(source).name or "model"
    return cache_root() / "nf4" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def nf4_rounded_checkpoint(model_path: str, *, dtype: str = "auto", device: Optional[str] = None,
                           trust_remote_code: bool = False, revision: Optional[str] = None) -> Path:
    """A checkpoint folder whose weights are ``model_path``'s after NF4 rounding (see the module
    docstring); made on first use, reused after. Safe when several processes race to make it."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    target = rounded_checkpoint_dir(model_path, dtype=dtype, device=device, revision=revision)
    if (target / "config.json").is_file():
        return target
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError("model.load_in_4bit needs bitsandbytes on the rollout node: pip install 'grpo-ray[quant]'") from None
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_rounded(model_path, tmp, dtype=_torch_dtype(dtype, device), device=device,
                  trust_remote_code=trust_remote_code, revision=revision)
    try:
        tmp.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_rounded(model_path: str, out: Path, *, dtype, device: str, trust_remote_code: bool = False,
                  revision: Optional[str] = None) -> None:
    """Load ``model_path`` in NF4 as the learner does and write every weight as bitsandbytes computes
    with it: quantized linear weights dequantized, everything else as loaded."""
    import bitsandbytes as bnb
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub = dict(trust_remote_code=trust_remote_code, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, quantization_config=nf4_config(dtype),
                                                 device_map={"": device}, **hub)
    tensors, seen = {}, set()
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = module.weight
            tensors[f"{name}.weight"] = bnb.functional.dequantize_4bit(w.data, w.quant_state).to(dtype).cpu()
            seen.add(id(w))
            if module.bias is not None:
                tensors[f"{name}.bias"] = module.bias.detach().to(dtype).cpu()
                seen.add(id(module.bias))
    for name, param in model.named_parameters():  # tied weights appear once
        if id(param) not in seen:
            tensors[name] = param.detach().to(dtype).cpu()
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    config.save_pretrained(str(out))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(model_path, **hub).save_pretrained(str(out))
    (out / "NF4_ROUNDED.json").write_text(json.dumps({"source": model_path, "revision": revision, **NF4_SETTINGS,
                                                      "dtype": str(dtype), "bitsandbytes": bnb.__version__}, indent=2))
