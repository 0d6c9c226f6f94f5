"""Adapter payloads: the LoRA tensors a learner publishes, and their on-disk PEFT form.

Only the adapter travels (a few MB even for an 8B model at rank 64), through the Ray object store,
so no shared filesystem is needed. An engine that can only load adapters from a folder (vLLM)
writes the payload into a versioned folder on its own node's disk and deletes older ones.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class AdapterPayload:
    """One published adapter version: PEFT state-dict tensors (on CPU) and the PEFT config dict."""

    version: int
    tensors: dict[str, Any]  # name -> torch.Tensor, names as in adapter_model.safetensors
    peft_config: dict[str, Any]

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    # Pickled as numpy arrays: Ray moves those through its object store without copying them into the
    # pickle (protocol-5 out-of-band buffers), while torch tensors are pickled as bytes. Measured on the
    # built-in model's 5 MB adapter, learner -> object store -> rollout actor: 7 ms against 33 ms.
    def __getstate__(self) -> dict[str, Any]:
        return {"version": self.version, "peft_config": self.peft_config,
                "arrays": {k: _to_numpy(v) for k, v in self.tensors.items()}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.version, self.peft_config = state["version"], state["peft_config"]
        self.tensors = {k: _from_numpy(*v) for k, v in state["arrays"].items()}


def _to_numpy(tensor) -> tuple[Any, str]:
    import torch

    t = tensor.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: travel as its bits
        return t.view(torch.int16).numpy(), "bfloat16"
    return t.numpy(), str(t.dtype).removeprefix("torch.")


def _from_numpy(array, dtype: str):
    import torch

    # the object store hands out read-only buffers; the receiver owns a writable copy (5 MB: ~1 ms)
    t = torch.from_numpy(array if array.flags.writeable else array.copy())
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def peft_config_dict(lora_config) -> dict[str, Any]:
    """A PEFT LoraConfig as the JSON-safe dict that adapter_config.json holds."""
    d = lora_config.to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}


def write_adapter_folder(payload: AdapterPayload, folder: Union[str, Path]) -> Path:
    """Write ``payload`` as a PEFT adapter folder (loadable by PeftModel and by vLLM's LoRA).

    Written to a sibling temp folder and renamed, so a reader never sees half an adapter.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in payload.tensors.items()}
    save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (tmp / ADAPTER_CONFIG).write_text(json.dumps(payload.peft_config, indent=2, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def read_adapter_folder(folder: Union[str, Path], version: int = 0) -> AdapterPayload:
    """Load a PEFT adapter folder back into a payload (e.g. to serve or resume from it)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights, config = folder / ADAPTER_WEIGHTS, folder / ADAPTER_CONFIG
    for p in (weights, config):
        if not p.is_file():
            raise FileNotFoundError(f"{folder} is not a PEFT adapter folder: {p.name} is missing")
    return AdapterPayload(version=version, tensors=load_file(str(weights)), peft_config=json.loads(config.read_text()))
