"""Metric sinks, chosen by name in ``trainer.sinks``; ``grpo_ray.run.metrics.MetricLogger`` fans out to them.

============  =======================================================  ===========================
name          writes                                                   needs
============  =======================================================  ===========================
console       tqdm bar (TTY) or a throttled line (logs); tables        tqdm
jsonl         output_dir/metrics.jsonl, output_dir/completions.jsonl   -
tensorboard   output_dir/tensorboard (scalars, completion text)         tensorboard
wandb         a W&B run (WANDB_PROJECT, default grpo-ray)              pip install wandb
mlflow        an MLflow run (MLFLOW_TRACKING_URI)                      pip install mlflow
============  =======================================================  ===========================

A new sink subclasses ``MetricSink`` and registers itself with ``@SINKS.register("name")``.
"""

from grpo_ray.metric_sinks.base import SINKS, MetricSink, SinkContext, jsonable, markdown_table, text_table
from grpo_ray.metric_sinks import console, jsonl, tensorboard, tracking  # noqa: F401  (registers the sinks)
from grpo_ray.metric_sinks.jsonl import drop_steps_after

__all__ = ["SINKS", "MetricSink", "SinkContext", "drop_steps_after", "jsonable", "markdown_table", "text_table"]
