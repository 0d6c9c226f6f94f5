"""The terminal: a tqdm bar over ``trainer.steps`` on a TTY, a throttled plain line otherwise.

On a terminal the bar shows step, reward, kl and the ETA and is redrawn in place. When stderr is a
file or a pipe (Ray job logs, nohup, CI) a redrawn bar would write a carriage-return update per
step into the log, so instead one readable line is printed at most every ``min_interval_s``, plus
the first and last step. Completion tables are printed above the bar, clipped to fit a terminal.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional, TextIO

from tqdm import tqdm

from grpo_ray.metric_sinks.base import SINKS, MetricSink, Row, SinkContext, is_number, text_table

POSTFIX = ("reward", "kl")
TABLE_WIDTHS = {"prompt": 28, "completion": 48, "answer": 10}


def _number(value: Any) -> str:
    return f"{value:.4g}" if is_number(value) else str(value)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@SINKS.register("console")
class ConsoleSink(MetricSink):
    min_interval_s = 10.0  # non-TTY: at most one line per this many seconds (first and last step always)
    max_rows = 8  # completion rows printed per table

    def __init__(self, ctx: SinkContext) -> None:
        super().__init__(ctx)
        self.stream: TextIO = ctx.stream or sys.stderr
        self.bar: Optional[tqdm] = None
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self.resume_from(ctx.start_step)

    def resume_from(self, step: int) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None
        if self.interactive:
            self.bar = tqdm(
                total=self.ctx.total_steps, initial=step, file=self.stream, desc="train", unit="step",
                dynamic_ncols=True, smoothing=0.1,
            )
        # plain-line ETA: the rate since the first step logged here (set-up time before it is not a step)
        self._first: Optional[tuple[int, float]] = None
        self._last_print = -math.inf

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        shown = {k: _number(metrics[k]) for k in POSTFIX if k in metrics}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(step - self.bar.n)
            return
        now, total = time.monotonic(), self.ctx.total_steps
        if self._first is None:
            self._first = (step, now)
        elif not (step >= total or now - self._last_print >= self.min_interval_s):
            return
        self._last_print = now
        done = step - self._first[0]
        per_step = (now - self._first[1]) / done if done > 0 else math.nan
        parts = [f"step {step}/{total}", *(f"{k} {v}" for k, v in shown.items())]
        if done > 0:
            parts += [f"{per_step:.3g} s/step", f"eta {_duration(per_step * max(total - step, 0))}"]
        self._print(" | ".join(parts))

    def log_completions(self, step: int, rows: Sequence[Row]) -> None:
        if not rows:
            return
        shown = rows[: self.max_rows]
        note = f" (first {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""
        self._print(f"completions at step {step}{note}:\n{text_table(shown, TABLE_WIDTHS)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)  # above the bar, which is redrawn below
        else:
            self.stream.write(text + "\n")
            self.stream.flush()
