"""The data side of a run: training rows, the prompt sampler (the data cursor a checkpoint saves) and
the held-out rows evaluation uses, with prompts over ``data.max_prompt_tokens`` left out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from grpo_ray.config import GRPOConfig
from grpo_ray.data.from_config import load_split
from grpo_ray.errors import UserError
from grpo_ray.rollout.kinds.base import kind_spec, prompt_encoder
from grpo_ray.data.sampler import PromptSampler

log = logging.getLogger("grpo_ray.data")


class TrainingData:
    def __init__(self, cfg: GRPOConfig, tokenizer) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        self.dataset = load_split(cfg.data, seed=cfg.trainer.seed)
        self.sampler = PromptSampler(len(self.dataset), cfg.trainer.seed)
        self.encode = prompt_encoder(kind_spec(cfg), tokenizer)  # as the rollout renders it (tools included)

    def sample_prompts(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` rows of the sampler's order, skipping prompts over ``data.max_prompt_tokens``."""
        rows, skipped, shortest, limit = [], 0, None, self.cfg.data.max_prompt_tokens
        while len(rows) < count:
            row = self.dataset[self.sampler.next_index()]
            length = len(self.encode(row["prompt"]))
            if length > limit:
                skipped += 1
                shortest = length if shortest is None else min(shortest, length)
                if skipped > len(self.dataset):
                    raise UserError(
                        f"data.max_prompt_tokens={limit}: every prompt is longer (the shortest has {shortest} "
                        f"tokens); raise data.max_prompt_tokens"
                    )
                continue
            rows.append(row)
        return rows

    def eval_rows(self) -> list[dict[str, Any]]:
        """The held-out rows (``eval.split`` of ``data.source``, or ``eval.source``) whose prompts fit."""
        cfg, e = self.cfg, self.cfg.eval
        limit = cfg.data.max_prompt_tokens
        if e.source is None and Path(cfg.data.source).expanduser().is_file():
            # one file has no splits: its "test" split would be the training rows themselves
            log.warning("eval: data.source %s is a single file with no held-out split; set eval.source to a "
                        "held-out file (or a folder of {train,test} files) to evaluate", cfg.data.source)
            return []
        data = cfg.data if e.source is None else cfg.data.model_copy(update={"source": e.source})
        try:
            rows = list(load_split(data, e.split, seed=cfg.trainer.seed, limit=e.limit))
        except (ValueError, KeyError, FileNotFoundError) as err:  # DataSourceError is a ValueError
            raise UserError(f"eval.split={e.split!r}: {err}; set eval.split or eval.source to held-out data, "
                            "or eval.enabled=false") from None
        fitting = [r for r in rows if len(self.encode(r["prompt"])) <= limit]
        if len(fitting) < len(rows):
            log.warning("eval: %d of %d held-out prompts are over data.max_prompt_tokens=%d and are left out",
                        len(rows) - len(fitting), len(rows), limit)
        if not fitting:
            raise UserError(f"eval.split={e.split!r}: no held-out prompt fits data.max_prompt_tokens={limit}")
        return fitting
