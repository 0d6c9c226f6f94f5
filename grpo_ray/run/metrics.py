"""Where the driver's metrics go: ``MetricLogger`` fans each step out to the sinks in ``trainer.sinks``.

Metric names are TRL's, so dashboards read the same: ``reward``, ``reward_std``,
``rewards/<fn>/mean``, ``rewards/<fn>/std``, ``frac_reward_zero_std``, ``kl``, ``entropy``,
``clip_ratio/...``, ``completions/mean_length``, ``completions/clipped_ratio``, ``learning_rate``,
``grad_norm``, and ``timing/<phase>`` from :class:`PhaseTimer`. Values may be NaN (a reward that
applied to no sample); JSON files write null for them.

Call ``log`` once per step with everything for that step (evaluation metrics included, prefixed
``eval/``): ``metrics.jsonl`` then holds each step exactly once, which is how a resumed run shows
that no step was lost or done twice. A typical driver::

    timer = PhaseTimer()
    with MetricLogger(cfg.trainer, start_step=step, run_config=cfg.to_dict()) as log:
        while step < cfg.trainer.steps:
            with timer.phase("generate"):
                ...
            step += 1
            log.log(step, {**train_metrics, **timer.pop()})
            every = cfg.trainer.log_completions_every
            if every and step % every == 0:
                log.log_completions(step, rows)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional, TextIO

from grpo_ray.metric_sinks import SINKS, MetricSink, SinkContext
from grpo_ray.metric_sinks.base import Row

if TYPE_CHECKING:
    from grpo_ray.config import TrainerConfig

__all__ = ["MetricLogger", "PhaseTimer"]


def _python_scalar(value: Any) -> Any:
    """numpy / torch scalars as Python numbers, so every sink sees plain floats and ints."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (int, float, str)):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value


class MetricLogger:
    """Sends each step's metrics and occasional completion tables to every sink in ``trainer.sinks``.

    Args:
        trainer: the trainer section: ``sinks``, ``output_dir`` (file sinks write inside it) and
            ``steps`` (for the progress bar and ETA).
        start_step: the last step already done: 0 for a fresh run, k when resuming after step k.
        fresh: a new run, not a resumed one: files left in the output dir by an earlier run are emptied.
            Files keep what they hold for steps <= k and drop the rest (a fresh run starts them empty).
        run_config: the resolved config, given to trackers that record it (W&B, MLflow).
        stream: where the console sink writes (default stderr).

    A sink whose package is missing raises a one-line ``ConfigError`` here, before training starts.
    """

    def __init__(
        self,
        trainer: "TrainerConfig",
        *,
        start_step: int = 0,
        run_config: Optional[dict[str, Any]] = None,
        stream: Optional[TextIO] = None,
        fresh: bool = False,
    ) -> None:
        ctx = SinkContext(Path(trainer.output_dir), trainer.steps, start_step, run_config, stream, fresh)
        self.sinks: dict[str, MetricSink] = {}
        try:
            for name in dict.fromkeys(trainer.sinks):  # a sink listed twice would double every line
                self.sinks[name] = SINKS.get(name)(ctx)
        except BaseException:
            self.close()  # do not leave a half-built logger's files and runs open
            raise
        self._closed = False

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """One step's metrics to every sink (call once per step; NaN values are fine)."""
        clean = {str(k): _python_scalar(v) for k, v in metrics.items()}
        for sink in self.sinks.values():
            sink.log(step, clean)

    def log_completions(self, step: int, rows: Sequence[Row]) -> None:
        """A table of sample completions.

        Each row has ``prompt``, ``completion``, ``answer`` (str), ``reward`` (float) and one
        ``rewards/<fn>`` float per reward function; other keys become extra columns. Goes to
        ``completions.jsonl`` (with ``step``), a TensorBoard text summary, a clipped console table
        and a W&B table, as configured.
        """
        clean = [{str(k): _python_scalar(v) for k, v in row.items()} for row in rows]
        for sink in self.sinks.values():
            sink.log_completions(step, clean)

    def resume_from(self, step: int) -> None:
        """Rewind to just after ``step`` (e.g. after reloading a checkpoint mid-run): sinks drop later steps."""
        for sink in self.sinks.values():
            sink.resume_from(step)

    def close(self) -> None:
        """Close every sink (once); the first error, if any, is raised after all have been tried."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        first_error: Optional[BaseException] = None
        for sink in self.sinks.values():
            try:
                sink.close()
            except Exception as err:  # noqa: BLE001 - re-raised below once the others are closed
                first_error = first_error or err
        if first_error is not None:
            raise first_error

    def __enter__(self) -> "MetricLogger":
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()


class PhaseTimer:
    """Wall time per phase of a step, as ``timing/<phase>`` metrics (OpenRLHF's convention).

    >>> timer = PhaseTimer()
    >>> with timer.phase("generate"):
    ...     pass
    >>> sorted(timer.pop())
    ['timing/generate']
    >>> timer.pop()
    {}
    """

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block; a phase entered twice in one step adds up. Timed even if the block raises."""
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"timing/{name}"
            self._seconds[key] = self._seconds.get(key, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        """The phases timed since the last pop, ``{"timing/<phase>": seconds}``, and start afresh."""
        out, self._seconds = self._seconds, {}
        return out
