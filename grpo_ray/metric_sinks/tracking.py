"""Experiment trackers, used only when listed in ``trainer.sinks``: Weights & Biases and MLflow.

Both are optional dependencies (``pip install 'grpo-ray[tracking]'``), imported when the sink is
built. Each remembers its run id in the output dir, so a resumed run continues the same tracked run.

Neither can take back what it already received. After a resume from step k (a new process) or a
rewind to step k (``MetricLogger.resume_from``), the points already logged for steps after k stay,
and the re-done steps are added beside them: both trackers then show two points for those steps.
``metrics.jsonl`` is the record that holds each step once.

What each stores, read back from the libraries themselves in ``tests/unit/metric_sinks``:

- W&B (a run in ``output_dir/wandb``, offline when ``WANDB_MODE=offline``): every metric as logged,
  NaN and infinities included, against a ``step`` metric (W&B's own ``_step`` counts log calls);
  the completions as a ``wandb.Table``; the whole config as the run's config.
- MLflow: numeric metrics per step (NaN stays NaN; MLflow stores +-inf as +-1.8e308, the largest
  float); the config flattened into params (``algo.beta``) and whole as ``config.json``; each
  completions table as ``completions/step_NNNNNNN.json`` (column name -> values).
"""

from __future__ import annotations

import json
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

    STEP = "step"  # the x-axis of every chart

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
        # The step is a logged value, not W&B's own _step: W&B ignores (with a warning) a point
        # logged at a _step below its current one and merges one at its current _step into the
        # row it holds, so after a rewind it would keep the abandoned steps' values. With a step
        # metric every point is kept, and each row is written when logged, not when the next
        # step starts.
        self.run.define_metric(self.STEP, hidden=True)
        self.run.define_metric("*", step_metric=self.STEP)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.run.log({**metrics, self.STEP: step})

    def log_completions(self, step: int, rows: Sequence[Row]) -> None:
        columns = table_columns(rows)
        data = [[jsonable(row.get(c)) for c in columns] for row in rows]
        self.run.log({"completions": self.wandb.Table(columns=columns, data=data), self.STEP: step})

    def close(self) -> None:
        self.run.finish()


MLFLOW_PARAM_CHARS = 6000  # MLflow rejects a param value longer than this (MAX_PARAM_VAL_LENGTH)


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, scalars as text, lists as JSON.

    >>> flat_params({"algo": {"beta": 0.04, "eps": None}, "trainer": {"sinks": ["jsonl"], "x": {}}})
    {'algo.beta': '0.04', 'algo.eps': 'None', 'trainer.sinks': '["jsonl"]', 'trainer.x': '{}'}
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, name + "."))
        elif isinstance(value, str):
            out[name] = value[:MLFLOW_PARAM_CHARS]  # config.json keeps the whole value
        elif value is None or isinstance(value, (bool, int, float)):
            out[name] = str(value)
        else:  # lists, empty mappings
            out[name] = json.dumps(jsonable(value))[:MLFLOW_PARAM_CHARS]
    return out


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
        # A fresh run only: MLflow refuses to change a param's value, and a resumed run may differ
        # in what a resume is allowed to change (trainer.steps, say).
        if run_id is None and ctx.run_config is not None:
            self.mlflow.log_params(flat_params(ctx.run_config))
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
