"""The evaluation table: the mean of a few reward functions over a held-out set, each with its maximum.

The columns are hard correctness, soft correctness, integer, soft format and strict format (the
table of the GSM8K reference run in docs/training.md reports), computed with the same reward functions training
uses, so an eval number and a training reward of the same name mean the same thing. PubMedQA reports accuracy on its yes/no/maybe label instead of
the numeric metrics. Pure Python: no Ray, no vLLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from grpo_ray.rewards.registry import resolve_reward, score_completions


@dataclass(frozen=True)
class EvalMetric:
    label: str  # as printed in the table
    reward: str  # built-in reward function name
    maximum: float  # the best value a completion can score

    @property
    def key(self) -> str:  # metric name in logs and JSON: "hard_correctness"
        return self.label.replace(" ", "_")


MATH_METRICS = (
    EvalMetric("hard correctness", "correctness", 1.0),
    EvalMetric("soft correctness", "soft_correctness", 1.0),
    EvalMetric("integer", "integer", 0.5),
    EvalMetric("soft format", "soft_format", 0.5),
    EvalMetric("strict format", "strict_format", 0.5),
)
LABEL_METRICS = (  # classification answers (PubMedQA: yes/no/maybe)
    EvalMetric("accuracy", "pubmedqa_correctness", 1.0),
    EvalMetric("soft format", "soft_format", 0.5),
    EvalMetric("strict format", "strict_format", 0.5),
)
LABELS = frozenset({"yes", "no", "maybe"})
TOOL_METRICS = (EvalMetric("tool call rate", "tool_called", 1.0),)  # multi-turn rollouts with tools


def metrics_for_rows(rows: Sequence[Mapping[str, Any]], tools: bool = False) -> tuple[EvalMetric, ...]:
    """The table's rows for a dataset: label accuracy when every gold answer is yes/no/maybe
    (PubMedQA), else the math set; with ``tools``, the tool-call rate too."""
    golds = {str(row.get("answer", "")).strip().lower() for row in rows}
    base = LABEL_METRICS if golds and golds <= LABELS else MATH_METRICS
    return base + (TOOL_METRICS if tools else ())


@dataclass
class EvalResult:
    """One model's scores on one eval set: per-metric means and per-completion values."""

    means: dict[str, float]  # metric key -> mean over completions where it applies
    values: dict[str, list[float | None]]  # metric key -> one value per completion
    count: int


def score_eval(
    rows: Sequence[Mapping[str, Any]],
    texts: Sequence[str],
    metrics: Sequence[EvalMetric] = MATH_METRICS,
    *,
    tag_style: str = "reasoning",
    episodes: Optional[Sequence[Mapping[str, float]]] = None,
) -> EvalResult:
    """Score one completion per row. ``rows`` carry the dataset columns (``prompt``, ``answer``...);
    a metric whose reward returns None for a row (no gold) leaves it out of that metric's mean.
    ``episodes``: a multi-turn rollout's per-episode counts (``tool_calls``...), given to the rewards."""
    if len(rows) != len(texts):
        raise ValueError(f"{len(rows)} rows but {len(texts)} completions")
    prompts = [row["prompt"] for row in rows]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    columns = {k: [row[k] for row in rows] for k in (rows[0] if rows else {}) if k != "prompt"}
    if episodes is not None:
        columns["tool_calls"] = [int(e.get("tool_calls", 0)) for e in episodes]
    fns = [resolve_reward(m.reward) for m in metrics]
    scored = score_completions(fns, prompts, completions, columns, [{"tag_style": tag_style}] * len(fns))
    values, means = {}, {}
    for metric, column in zip(metrics, scored):
        present = [v for v in column if v is not None and not math.isnan(v)]
        values[metric.key] = list(column)
        means[metric.key] = sum(present) / len(present) if present else float("nan")
    return EvalResult(means=means, values=values, count=len(texts))


def markdown_table(results: Mapping[str, Mapping[str, float]], metrics: Sequence[EvalMetric]) -> str:
    """``results``: column label ("base", "tuned") -> metric key -> mean. A delta column follows
    when there are exactly two columns."""
    names = list(results)
    delta = len(names) == 2
    header = ["metric", *names, *(["change"] if delta else []), "max"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for m in metrics:
        cells = [m.label, *(f"{results[n].get(m.key, float('nan')):.3f}" for n in names)]
        if delta:
            a, b = (results[n].get(m.key, float("nan")) for n in names)
            cells.append(f"{b - a:+.3f}")
        cells.append(f"{m.maximum:g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
