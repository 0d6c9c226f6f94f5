"""The one place where ``DataConfig`` meets the loaders (which take plain arguments)."""

from __future__ import annotations

from typing import Optional

from grpo_ray.config import DataConfig
from grpo_ray.data.loader import load_prompt_dataset


def load_split(cfg: DataConfig, split: Optional[str] = None, *, seed: int = 0, limit: Optional[int] = None):
    """Rows of ``split`` (default: the training split) as ``load_prompt_dataset`` returns them."""
    return load_prompt_dataset(
        cfg.source,
        split=split or cfg.split,
        data_dir=cfg.data_dir,
        question_column=cfg.question_column,
        answer_column=cfg.answer_column,
        system_prompt=cfg.system_prompt,
        tag_style=cfg.tag_style,
        subset=cfg.subset,
        limit=limit if limit is not None else cfg.limit,
        seed=seed,
        demonstrations=[d.as_tuple() for d in cfg.demonstrations],
        assistant_prefix=cfg.assistant_prefix,
    )
