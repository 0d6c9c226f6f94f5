"""LoRA adapters on disk: the PEFT folder form (``adapter_config.json`` + ``adapter_model.safetensors``)
that checkpoints, ``--adapter`` and vLLM's LoRA loader all use, and the PEFT config of a run.

In memory an adapter is a :class:`grpo_ray.wire.LoraAdapter`; only it travels between actors (through
the Ray object store, no shared filesystem). An engine that loads adapters only from a folder (vLLM's
LoRA path) writes it into a versioned folder on its own node's disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from grpo_ray.wire import LoraAdapter

if TYPE_CHECKING:
    from grpo_ray.config import ModelConfig

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def peft_lora_config(model_cfg: "ModelConfig"):
    """The PEFT ``LoraConfig`` that ``model.lora`` describes."""
    from peft import LoraConfig

    lc = model_cfg.lora
    return LoraConfig(
        r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=lc.target_modules,
        bias="none", task_type="CAUSAL_LM",
    )


def peft_config_dict(lora_config) -> dict[str, Any]:
    """A PEFT LoraConfig as the JSON-safe dict that adapter_config.json holds."""
    d = lora_config.to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}


def write_adapter_folder(adapter: LoraAdapter, folder: Union[str, Path]) -> Path:
    """Write ``adapter`` as a PEFT adapter folder (loadable by PeftModel and by vLLM's LoRA).

    Written to a sibling temp folder and renamed, so a reader never sees half an adapter.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter.tensors.items()}
    save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (tmp / ADAPTER_CONFIG).write_text(json.dumps(adapter.peft_config, indent=2, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def read_adapter_folder(folder: Union[str, Path], version: int = 0) -> LoraAdapter:
    """Load a PEFT adapter folder back into an adapter (e.g. to serve or evaluate it)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights, config = folder / ADAPTER_WEIGHTS, folder / ADAPTER_CONFIG
    for p in (weights, config):
        if not p.is_file():
            raise FileNotFoundError(f"{folder} is not a PEFT adapter folder: {p.name} is missing")
    return LoraAdapter(version=version, tensors=load_file(str(weights)), peft_config=json.loads(config.read_text()))
