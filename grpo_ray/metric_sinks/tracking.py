"""Experiment trackers, used only when listed in ``trainer.sinks``: Weights & Biases and MLflow.

Both are optional dependencies (``pip install 'grpo-ray[tracking]'``), imported when the sink is
built. Each remembers its run id in the output dir, so a resumed run continues the same tracked run.
Neither can take back what it already received: after a resume, points for steps past the resumed
step stay there (W&B ignores the re-logged steps; MLflow shows both).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from grpo_ray.metric_sinks.base import (
    SINKS,
    MetricSink,
    Row,
    SinkContext,
    import_optional,
    is_number,
    jsonable,
    table_columns,
)


def _saved_run_id(ctx: SinkContext, filename: str) -> Optional[str]:
    path = ctx.output_dir / filename
    if ctx.start_step == 0 or not path.exists():
        return None  # a fresh run starts a new tracked run, even in a reused output dir
    return path.read_text().strip() or None


@SINKS.register("wandb")
class WandbSink(MetricSink):
    """``wandb.init(project=$WANDB_PROJECT or 'grpo-ray', dir=output_dir, config=the run's config)``."""

    def __init__(self, ctx: SinkContext) -> None:
        super().__init__(ctx)
        self.wandb = import_optional("wandb", "wandb")
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        run_id = _saved_run_id(ctx, "wandb_run_id")
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT", "grpo-ray"),
            name=ctx.output_dir.name,
            dir=str(ctx.output_dir),
            config=ctx.run_config,
            id=run_id,
            resume="allow" if run_id else None,
        )
        (ctx.output_dir / "wandb_run_id").write_text(self.run.id)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_completions(self, step: int, rows: Sequence[Row]) -> None:
        columns = table_columns(rows)
        data = [[jsonable(row.get(c)) for c in columns] for row in rows]
        self.run.log({"completions": self.wandb.Table(columns=columns, data=data)}, step=step)

    def close(self) -> None:
        self.run.finish()


@SINKS.register("mlflow")
class MlflowSink(MetricSink):
    """``mlflow.start_run()`` (tracking URI from ``MLFLOW_TRACKING_URI``), metrics per step, tables as JSON."""

    def __init__(self, ctx: SinkContext) -> None:
        super().__init__(ctx)
        self.mlflow = import_optional("mlflow", "mlflow")
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        run_id = _saved_run_id(ctx, "mlflow_run_id")
        self.run = self.mlflow.start_run(run_id=run_id, run_name=None if run_id else ctx.output_dir.name)
        (ctx.output_dir / "mlflow_run_id").write_text(self.run.info.run_id)
        if run_id is None and ctx.run_config is not None:
            self.mlflow.log_dict(ctx.run_config, "config.json")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items() if is_number(v)}, step=step)

    def log_completions(self, step: int, rows: Sequence[Row]) -> None:
        columns = table_columns(rows)
        data = {c: [jsonable(row.get(c)) for row in rows] for c in columns}
        # log_dict, not log_table: log_table lists every table in one run tag capped at 5000 characters
        # (mlflow/mlflow#11874), which a long run's tables would outgrow.
        self.mlflow.log_dict(data, f"completions/step_{step:07d}.json")

    def close(self) -> None:
        self.mlflow.end_run()
