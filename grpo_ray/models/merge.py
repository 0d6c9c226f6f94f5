"""``grpo-ray merge``: fold a LoRA adapter into its base model and save a plain checkpoint
(safetensors + tokenizer) that ``AutoModelForCausalLM.from_pretrained`` and vLLM load directly."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from grpo_ray.errors import UserError


def merge_adapter(
    model: str, adapter: str, out: str, *, dtype: str = "auto", force: bool = False,
    trust_remote_code: bool = False, revision: Optional[str] = None,
) -> Path:
    """Write ``base + adapter`` to ``out``. The folder is built under a temporary name and renamed,
    so an existing ``out`` is replaced only with ``force`` and only once the new one is complete."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ray.models.paths import resolve_adapter_path, resolve_model_path

    target = Path(out).expanduser()
    if target.exists() and any(target.iterdir()) and not force:
        raise UserError(f"--out {str(target)!r} exists and is not empty; pick a new folder or pass --force")
    adapter_dir = resolve_adapter_path(adapter)
    model_path = resolve_model_path(model)
    hub = dict(trust_remote_code=trust_remote_code, revision=revision)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype, **hub)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    tokenizer_source = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else model_path
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source), **hub)

    tmp = target.with_name(target.name + ".tmp-merge")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
