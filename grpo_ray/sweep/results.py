"""What a sweep leaves in its folder: the results table (CSV and markdown), the best trial's config as
a ready train YAML, its adapter path (``best_trial.json``, and ``adapter.json``, which makes the
sweep dir usable as ``--adapter``), and a PNG with every trial's curves.

Everything here works on :class:`TrialRecord` lists, so it is independent of Tune's result objects
(:func:`records_from_results` converts those).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from grpo_ray.run.checkpoints import find_latest_checkpoint
from grpo_ray.evaluation.records import write_json_atomic
from grpo_ray.models.paths import is_adapter_folder, write_adapter_pointer

COMPLETED, STOPPED, ERROR, UNFINISHED = "completed", "stopped early", "error", "unfinished"


@dataclass
class TrialRecord:
    trial_id: str
    params: dict[str, Any]  # sampled values by dotted key
    history: list[dict[str, float]]  # one row per reported step
    status: str
    run_dir: Path
    error: Optional[str] = None
    config: dict[str, Any] = field(default_factory=dict)  # the trial's whole train config

    @property
    def steps(self) -> int:
        return max((int(r["step"]) for r in self.history), default=0)

    def values(self, metric: str) -> list[float]:
        return [float(r[metric]) for r in self.history if _finite(r.get(metric))]

    def final(self, metric: str) -> float:
        v = self.values(metric)
        return v[-1] if v else math.nan

    def best(self, metric: str, mode: str) -> float:
        v = self.values(metric)
        return (max(v) if mode == "max" else min(v)) if v else math.nan

    def adapter(self) -> Optional[Path]:
        """The latest complete checkpoint's LoRA adapter; None without one (or for a full fine-tune)."""
        ckpt = find_latest_checkpoint(self.run_dir) if self.run_dir.is_dir() else None
        return ckpt / "adapter" if ckpt is not None and is_adapter_folder(ckpt / "adapter") else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def status_of(history: Sequence[dict], error: Optional[str], max_steps: int, tune_status: str = "TERMINATED") -> str:
    """Ours from Tune's: a TERMINATED trial short of the last step was stopped by the scheduler; one
    still PENDING/RUNNING/PAUSED when the sweep ended was interrupted and resumes with the sweep."""
    if error or tune_status == "ERROR":
        return ERROR
    last = max((int(r["step"]) for r in history), default=0)
    if last >= max_steps:
        return COMPLETED
    return STOPPED if tune_status == "TERMINATED" else UNFINISHED


def best_trial(records: Sequence[TrialRecord], metric: str, mode: str) -> Optional[TrialRecord]:
    """The trial with the best final metric among those that ran every step (any trial if none did)."""
    pool = [r for r in records if r.status == COMPLETED and _finite(r.final(metric))]
    pool = pool or [r for r in records if _finite(r.final(metric))]
    if not pool:
        return None
    sign = 1 if mode == "max" else -1
    return max(pool, key=lambda r: sign * r.final(metric))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def table_rows(records: Sequence[TrialRecord], keys: Sequence[str], metric: str, mode: str) -> list[dict[str, Any]]:
    return [
        {"trial": r.trial_id, **{k: r.params.get(k) for k in keys}, f"final {metric}": r.final(metric),
         f"best {metric}": r.best(metric, mode), "steps": r.steps, "status": r.status}
        for r in records
    ]


def write_tables(rows: list[dict[str, Any]], sweep_dir: Path) -> tuple[Path, Path]:
    csv_path, md_path = sweep_dir / "results.csv", sweep_dir / "results.md"
    header = list(rows[0]) if rows else ["trial"]
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(markdown(rows) + "\n", encoding="utf-8")
    return csv_path, md_path


def markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(row[k]) for k in header) + " |" for row in rows]
    return "\n".join(lines)


def write_best(best: TrialRecord, sweep_dir: Path, metric: str) -> Path:
    """``best_config.yaml``: the best trial's train config, writing to its own fresh output dir;
    ``best_trial.json``: its trial, values and metric; ``adapter.json``: its adapter, so that
    ``--adapter SWEEP_DIR`` finds it (removed when it has none)."""
    config = dict(best.config)
    config["trainer"] = {**config.get("trainer", {}), "output_dir": str(sweep_dir / "best_run"), "resume": None}
    path = sweep_dir / "best_config.yaml"
    head = (f"# best trial {best.trial_id} of sweep {sweep_dir.name}: final {metric} = {_fmt(best.final(metric))}\n"
            f"# its adapter: {best.adapter()}\n# retrain: grpo-ray train --config {path}\n")
    path.write_text(head + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    write_json_atomic(sweep_dir / "best_trial.json", {
        "trial": best.trial_id, "params": best.params, "metric": metric, "final": best.final(metric),
        "adapter": str(best.adapter()) if best.adapter() else None, "config": str(path),
    })
    write_adapter_pointer(sweep_dir, best.adapter())
    return path


def plot_trials(records: Sequence[TrialRecord], path: Path, metric: str, *, title: str) -> Path:
    """One line per trial for the training reward and (when it differs) the sweep metric; trials a
    scheduler stopped are dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["reward"] + ([metric] if metric != "reward" else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, key in zip(axes[0], panels):
        for i, r in enumerate(records):
            points = [(int(h["step"]), float(h[key])) for h in r.history if _finite(h.get(key))]
            if key.startswith("eval/"):  # reports carry the newest eval along; plot each evaluation once, at its step
                points = sorted({(int(h["eval/step"]), float(h[key])) for h in r.history
                                 if _finite(h.get(key)) and _finite(h.get("eval/step"))}) or points
            if not points:
                continue
            xs, ys = zip(*points)
            label = f"{r.trial_id}: " + ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in r.params.items())
            ax.plot(xs, ys, color=f"C{i % 10}", linestyle="-" if r.status == COMPLETED else "--",
                    marker="." if key != "reward" else None, label=f"{label} ({r.status})")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _saved_trials(grid) -> list:
    """The trials as Tune's saved experiment state has them (what a resumed sweep starts from)."""
    try:
        from ray.tune import ExperimentAnalysis

        return list(ExperimentAnalysis(grid.experiment_path).trials)
    except (ValueError, OSError):  # no saved state to read: the in-memory statuses are the only ones
        return []


def records_from_results(grid, plan, max_steps: int) -> list[TrialRecord]:
    """Tune's ResultGrid -> records, in trial order. Trials that reported nothing keep an empty history."""
    from grpo_ray.sweep.trial import RUN_DIR

    keys = list(plan.spec.search_space)
    # Tune keeps each trial's status on its experiment analysis (not on the Result). After Ctrl-C the
    # in-memory one has the running trials stopped (TERMINATED); the state Tune saved on disk, which a
    # resume reads, still has them running: read that one.
    trials = _saved_trials(grid) or getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    tune_status = {str(Path(t.path)): t.status for t in trials if getattr(t, "path", None)}
    records = []
    for result in grid:
        df = result.metrics_dataframe
        history = []
        if df is not None and "step" in df.columns:
            cols = [c for c in df.columns if c == "step" or c == "reward" or c.startswith(("eval/", "rewards/")) or c == plan.spec.metric]
            history = [{k: v for k, v in row.items() if _finite(v)} for row in df[cols].to_dict("records")]
            history = [h for h in history if "step" in h]
        trial_dir = Path(result.path)
        params = {k: result.config.get(k) for k in keys}
        error = str(result.error).splitlines()[0] if result.error else None
        config = plan.trial_config(params, trial_dir / RUN_DIR).to_dict()
        trial_id = (result.metrics or {}).get("trial_id") or trial_dir.name
        status = status_of(history, error, max_steps, tune_status.get(str(trial_dir), "TERMINATED"))
        records.append(TrialRecord(trial_id, params, history, status, trial_dir / RUN_DIR, error, config))
    return sorted(records, key=lambda r: r.trial_id)
