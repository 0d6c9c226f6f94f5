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

The rollout workers of a node ask for the copy at once: one builds it under a file lock while the
others wait and reuse it (``grpo_ray.utils.folders.build_once``). The build runs in a subprocess
(``python -m grpo_ray.models.nf4``), so the whole model it loads, and the CUDA memory it leaves cached,
are gone before the worker starts vLLM.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from grpo_ray.utils.folders import build_once

NF4_SETTINGS = {"quant_type": "nf4", "double_quant": True, "blocksize": 64}
DESCRIPTION_FILE = "NF4_ROUNDED.json"  # written last: a folder with it is complete


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
    docstring); made on first use, once per node however many processes ask at once, reused after."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    target = rounded_checkpoint_dir(model_path, dtype=dtype, device=device, revision=revision)
    if is_complete(target):
        return target
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError("model.load_in_4bit needs bitsandbytes on the rollout node: pip install 'grpo-ray[quant]'") from None
    args = {"model_path": model_path, "dtype": dtype, "device": device, "trust_remote_code": trust_remote_code,
            "revision": revision}
    return build_once(target, lambda tmp: write_rounded_in_subprocess(out=str(tmp), **args), is_complete=is_complete)


def is_complete(folder: Path) -> bool:
    """A rounded copy is complete when its description, written last, is there."""
    return (folder / DESCRIPTION_FILE).is_file() and (folder / "config.json").is_file()


def write_rounded_in_subprocess(**args) -> None:
    """:func:`write_rounded` in a fresh Python process (``args``: what :func:`_main` reads), so that its
    model and CUDA cache go with it. A failure raises with the end of the child's output."""
    package_root = str(Path(__file__).resolve().parents[2])  # grpo_ray importable however this process found it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-m", "grpo_ray.models.nf4", json.dumps(args)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"building the NF4-rounded copy of {args['model_path']} failed (exit {proc.returncode}):\n{tail}")


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
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    config.save_pretrained(str(out))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(model_path, **hub).save_pretrained(str(out))
    (out / DESCRIPTION_FILE).write_text(json.dumps({"source": model_path, "revision": revision, **NF4_SETTINGS,
                                                      "dtype": str(dtype), "bitsandbytes": bnb.__version__}, indent=2))


def _main(argv: list[str]) -> None:
    """``python -m grpo_ray.models.nf4 JSON``: write one rounded copy (JSON: model_path, out, dtype, device,
    trust_remote_code, revision), for :func:`write_rounded_in_subprocess`."""
    a = json.loads(argv[0])
    write_rounded(a["model_path"], Path(a["out"]), dtype=_torch_dtype(a["dtype"], a["device"]), device=a["device"],
                  trust_remote_code=a["trust_remote_code"], revision=a["revision"])


if __name__ == "__main__":
    _main(sys.argv[1:])
