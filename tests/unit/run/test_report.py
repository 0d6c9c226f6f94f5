from __future__ import annotations

import json

import pytest

from grpo_ray.run.report import moving_average, plot_report, read_metric_rows, series

pytestmark = pytest.mark.unit


def test_moving_average_is_trailing() -> None:
    assert moving_average([1, 2, 3, 4], 2) == [1.0, 1.5, 2.5, 3.5]
    assert moving_average([5], 3) == [5.0]


def test_series_skips_missing_and_nan() -> None:
    rows = [{"step": 0, "eval/x": 0.2}, {"step": 1, "reward": 1.0}, {"step": 2, "eval/x": float("nan")},
            {"step": 3, "eval/x": 0.4}]
    assert series(rows, "eval/x") == ([0, 3], [0.2, 0.4])


def test_report_png_from_metrics_jsonl(tmp_path) -> None:
    rows = [{"step": 0, "eval/hard_correctness": 0.2}]
    rows += [{"step": s, "reward": 1 + s / 10, "rewards/correctness/mean": s / 20, "rewards/integer/mean": 0.5}
             for s in range(1, 11)]
    rows[-1]["eval/hard_correctness"] = 0.4
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{half a line")
    loaded = read_metric_rows(path)
    assert len(loaded) == 11  # the broken last line is skipped
    out = plot_report(loaded, tmp_path / "report.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # three drawn panels, not an empty canvas
    assert read_metric_rows(tmp_path / "missing.jsonl") == []
