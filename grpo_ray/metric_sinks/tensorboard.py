"""TensorBoard: scalars under ``output_dir/tensorboard``, completion tables as text summaries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grpo_ray.metric_sinks.base import SINKS, MetricSink, Row, SinkContext, import_optional, is_number, markdown_table


@SINKS.register("tensorboard")
class TensorBoardSink(MetricSink):
    """One ``add_scalar`` per numeric metric, flushed every step so TensorBoard shows it live."""

    def __init__(self, ctx: SinkContext) -> None:
        super().__init__(ctx)
        self._module = import_optional("torch.utils.tensorboard", "tensorboard", pip_name="tensorboard")
        self.log_dir = ctx.output_dir / "tensorboard"
        self.writer = self._open(ctx.start_step)

    def _open(self, step: int) -> Any:
        # purge_step hides events a previous run wrote for steps after the resumed one.
        return self._module.SummaryWriter(str(self.log_dir), purge_step=step + 1 if step > 0 else None)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for name, value in metrics.items():
            if is_number(value):
                self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()

    def log_completions(self, step: int, rows: Sequence[Row]) -> None:
        self.writer.add_text("completions", markdown_table(rows), global_step=step)
        self.writer.flush()

    def resume_from(self, step: int) -> None:
        self.writer.close()
        self.writer = self._open(step)

    def close(self) -> None:
        self.writer.close()
