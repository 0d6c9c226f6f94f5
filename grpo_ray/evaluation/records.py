"""Evaluation results on disk: a JSON summary (means, metric maxima, sample completions) and,
for ``grpo-ray eval``, one JSONL line per completion."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from grpo_ray.data.prompts import question_of
from grpo_ray.evaluation.table import EvalResult
from grpo_ray.rewards.parsing import extract_xml_answer


def _question(row: Mapping[str, Any]) -> str:
    prompt = row.get("prompt")
    if isinstance(prompt, list) and any(m.get("role") == "user" for m in prompt):
        return str(question_of(prompt))  # not prompt[-1]: that may be an assistant prefix
    return str(row.get("question", prompt or ""))


def finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def sample_records(
    rows: Sequence[Mapping[str, Any]], texts: Sequence[str], result: EvalResult, *, count: int | None = None,
    tag_style: str = "reasoning",
) -> list[dict[str, Any]]:
    """Per completion: question, gold answer, response, extracted answer and each metric's value."""
    out = []
    for i in range(len(texts) if count is None else min(count, len(texts))):
        out.append({
            "question": _question(rows[i]),
            "answer": str(rows[i].get("answer", "")),
            "response": texts[i],
            "extracted": extract_xml_answer(texts[i], tag_style),
            **{k: finite_or_none(v[i]) for k, v in result.values.items()},
        })
    return out


def write_json_atomic(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_eval_json(
    path: Path, step: int, result: EvalResult, rows: Sequence[Mapping[str, Any]], texts: Sequence[str],
    *, samples: int = 5, tag_style: str = "reasoning",
) -> Path:
    """``eval/step-N.json`` of a training run: the means at that step and a few sample completions."""
    return write_json_atomic(Path(path), {
        "step": step,
        "count": result.count,
        "means": {k: finite_or_none(v) for k, v in result.means.items()},
        "samples": sample_records(rows, texts, result, count=samples, tag_style=tag_style),
    })


def read_eval_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
