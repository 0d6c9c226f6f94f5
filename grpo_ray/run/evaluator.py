"""Held-out evaluation during training: greedy trajectories for the ``eval.split`` prompts, through the
same rollout workers and the synced weights, scored as the eval table.

It runs before the first step, every ``eval.every`` steps and after the last one; its table metrics
are logged as ``eval/<key>`` and each result is kept as ``eval/step-N.json`` in the output dir.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from grpo_ray.config import GRPOConfig
from grpo_ray.evaluation.records import write_eval_json
from grpo_ray.evaluation.table import metrics_for_rows, score_eval
from grpo_ray.wire import SamplingConfig, WeightsHandle


class HeldOutEval:
    def __init__(self, cfg: GRPOConfig, rows: list[dict[str, Any]], output_dir: Path) -> None:
        self.cfg, self.rows, self.output_dir = cfg, rows, output_dir
        # the table's rows for these held-out answers (with tools: the tool-call rate too)
        self.metrics = metrics_for_rows(rows, tools=cfg.rollout.kind == "multi_turn") if rows else ()
        self.last: dict[str, float] = {}  # eval/<key> of the newest evaluation (kept in checkpoints)

    @property
    def enabled(self) -> bool:
        return bool(self.rows)

    def due(self, step: int) -> bool:
        every = self.cfg.eval.every
        return self.enabled and (step == self.cfg.trainer.steps or (every > 0 and step % every == 0))

    def run(self, step: int, rollout: Any, weights: Optional[WeightsHandle]) -> dict[str, float]:
        """Evaluate ``weights`` through ``rollout`` (a :class:`~grpo_ray.run.rollout_client.RolloutClient`);
        saved as ``eval/step-{step}.json``. Returns ``eval/<key>`` metrics and ``timing/eval``."""
        start = time.perf_counter()
        sampling = SamplingConfig(n=1, temperature=0.0,
                                  max_tokens=self.cfg.eval.max_tokens or self.cfg.rollout.max_completion_tokens)
        batch = rollout.generate([row["prompt"] for row in self.rows], sampling, weights, self.rows)
        texts, tag_style = batch.final_texts(), self.cfg.data.tag_style
        result = score_eval(self.rows, texts, self.metrics, tag_style=tag_style, episodes=batch.episode_stats)
        write_eval_json(self.output_dir / "eval" / f"step-{step}.json", step, result, self.rows, texts, tag_style=tag_style)
        out = {f"eval/{k}": v for k, v in result.means.items()}
        self.last = {**out, "eval/step": float(step)}
        out["timing/eval"] = time.perf_counter() - start
        return out
