"""``report.png``: a training run's curves, drawn from its ``metrics.jsonl``.

Three panels against step: the total reward, each reward function's mean, and the held-out
evaluation metrics (``eval/*``). Moving averages smooth the noisy per-step rewards; the raw values
are drawn faintly behind them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


def read_metric_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``, skipping unreadable lines; [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def series(rows: Iterable[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) where ``key`` has a finite value."""
    steps, values = [], []
    for row in rows:
        v = row.get(key)
        if isinstance(v, (int, float)) and not math.isnan(v):
            steps.append(int(row["step"]))
            values.append(float(v))
    return steps, values


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_report(rows: Sequence[Mapping[str, Any]], path: Path, *, title: str = "GRPO training") -> Path:
    """Draw the three panels to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for row in rows for k in row})
    reward_fns = [k for k in keys if k.startswith("rewards/") and k.endswith("/mean")]
    eval_keys = [k for k in keys if k.startswith("eval/")]
    steps_total = max((int(r["step"]) for r in rows), default=0)
    window = max(1, steps_total // 20)

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    xs, ys = series(rows, "reward")
    ax.plot(xs, ys, color="tab:blue", alpha=0.25, linewidth=1)
    ax.plot(xs, moving_average(ys, window), color="tab:blue", linewidth=2, label=f"reward (mean of {window})")
    ax.set_title("total reward")
    ax.legend(loc="best", fontsize=8)

    ax = axes[1]
    for i, key in enumerate(reward_fns):
        xs, ys = series(rows, key)
        color = f"C{i % 10}"
        ax.plot(xs, ys, color=color, alpha=0.2, linewidth=1)
        ax.plot(xs, moving_average(ys, window), color=color, linewidth=2, label=key[len("rewards/"):-len("/mean")])
    ax.set_title("reward functions (batch mean)")
    if reward_fns:
        ax.legend(loc="best", fontsize=8)

    ax = axes[2]
    # the headline metric last and widest, so a metric with the same values (soft correctness on
    # integer answers) cannot hide it; the others dashed
    headline = next((k for k in ("eval/hard_correctness", "eval/accuracy") if k in eval_keys), None)
    for i, key in enumerate(sorted(eval_keys, key=lambda k: k == headline)):
        xs, ys = series(rows, key)
        if not xs:
            continue
        main = key == headline
        ax.plot(xs, ys, marker="o", color="black" if main else f"C{i % 10}", linewidth=3 if main else 1.5,
                linestyle="-" if main else "--", label=key[len("eval/"):].replace("_", " "), zorder=3 if main else 2)
    ax.set_title("held-out evaluation (greedy)")
    if eval_keys:
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no evaluation in this run", ha="center", va="center", transform=ax.transAxes)

    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_run_report(cfg, history: Sequence[Mapping[str, Any]]) -> Path:
    """A run's ``report.png`` from its whole ``metrics.jsonl`` (resumed runs included), or from ``history``
    when the JSONL sink is off."""
    out = Path(cfg.trainer.output_dir)
    rows = read_metric_rows(out / "metrics.jsonl") or list(history)
    return plot_report(rows, out / "report.png", title=f"GRPO: {cfg.model.name_or_path} on {cfg.data.source}")
