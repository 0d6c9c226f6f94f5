"""JSON-lines files: ``metrics.jsonl`` (one object per step) and ``completions.jsonl`` (one per row).

These files are the run's record: a resumed run drops the lines for steps after the resumed step
before appending, so every step appears exactly once and a lost or doubled step is visible.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from grpo_ray.metric_sinks.base import SINKS, MetricSink, Row, SinkContext, jsonable

logger = logging.getLogger("grpo_ray.run.metrics")


def drop_steps_after(path: Path, step: int) -> int:
    """Rewrite a JSONL file keeping only lines whose ``step`` is <= ``step``; returns lines dropped.

    A line that does not parse (the half-written last line of a crashed run) is dropped with a warning.
    """
    if not path.exists():
        return 0
    kept, dropped, unreadable = [], 0, 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                unreadable += 1
                continue
            if record_step <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if unreadable:
        logger.warning("%s: dropped %d unreadable line(s) (a run that stopped mid-write?)", path, unreadable)
    if dropped or unreadable:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a crash here leaves the old file or the new one
    return dropped + unreadable


@SINKS.register("jsonl")
class JsonlSink(MetricSink):
    """``{"step": k, ...metrics, "time": unix seconds}`` per line, flushed as written; NaN is null."""

    def __init__(self, ctx: SinkContext) -> None:
        super().__init__(ctx)
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = ctx.output_dir / "metrics.jsonl"
        self.completions_path = ctx.output_dir / "completions.jsonl"
        self._files: dict[Path, TextIO] = {}
        self.resume_from(-1 if ctx.fresh else ctx.start_step)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._write(self.metrics_path, [{"step": step, **metrics, "time": time.time()}])

    def log_completions(self, step: int, rows: Sequence[Row]) -> None:
        self._write(self.completions_path, [{"step": step, **row} for row in rows])

    def resume_from(self, step: int) -> None:
        self.close()
        for path in (self.metrics_path, self.completions_path):
            drop_steps_after(path, step)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _write(self, path: Path, records: Sequence[Mapping[str, Any]]) -> None:
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = path.open("a", encoding="utf-8")
        for record in records:
            f.write(json.dumps(jsonable(record), allow_nan=False, ensure_ascii=False) + "\n")
        f.flush()
