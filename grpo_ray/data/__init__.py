"""Datasets and prompt building for GRPO.

``load_prompt_dataset(source, ...)`` turns a built-in name, a local CSV/JSONL/JSON/Parquet file or
folder, or a hub id into rows ``{"prompt": [system, user], "answer": str, ...}`` (TRL's
conversational format). ``prompt_length_stats`` sizes prompts for a tokenizer. The arithmetic
generator lives in ``grpo_ray.data.arithmetic``.

Names are exported lazily so that ``grpo_ray.data.arithmetic`` stays importable without loading
``datasets``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from grpo_ray.data.arithmetic import generate_problems, heldout_problems, training_problems
    from grpo_ray.data.catalog import BuiltinDataset, LoadRequest
    from grpo_ray.data.loader import DATASETS, load_prompt_dataset
    from grpo_ray.data.prompts import build_prompt, resolve_system_prompt
    from grpo_ray.data.sources import DataSourceError
    from grpo_ray.data.stats import prompt_length_stats

_EXPORTS = {
    "load_prompt_dataset": "grpo_ray.data.loader",
    "DATASETS": "grpo_ray.data.loader",  # via loader, so every built-in is registered
    "DataSourceError": "grpo_ray.data.sources",
    "BuiltinDataset": "grpo_ray.data.catalog",
    "LoadRequest": "grpo_ray.data.catalog",
    "build_prompt": "grpo_ray.data.prompts",
    "resolve_system_prompt": "grpo_ray.data.prompts",
    "prompt_length_stats": "grpo_ray.data.stats",
    "generate_problems": "grpo_ray.data.arithmetic",
    "heldout_problems": "grpo_ray.data.arithmetic",
    "training_problems": "grpo_ray.data.arithmetic",
}

__all__ = [
    "DATASETS",
    "BuiltinDataset",
    "DataSourceError",
    "LoadRequest",
    "build_prompt",
    "generate_problems",
    "heldout_problems",
    "load_prompt_dataset",
    "prompt_length_stats",
    "resolve_system_prompt",
    "training_problems",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'grpo_ray.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
