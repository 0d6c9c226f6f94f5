"""Which held-out rows a training run evaluates on (no actors: the data side of a run alone)."""

from __future__ import annotations

import json

import pytest

from grpo_ray.config import load_config
from grpo_ray.data.training import TrainingData
from grpo_ray.errors import UserError
from grpo_ray.models.paths import resolve_model_path

pytestmark = pytest.mark.unit


def _trainer(tmp_path, *overrides):
    from transformers import AutoTokenizer

    cfg = load_config(None, ["model.name_or_path=builtin:arithmetic-base", f"trainer.output_dir={tmp_path}", *overrides])
    return TrainingData(cfg, AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.name_or_path)))


def _jsonl(path, n, offset=0):
    path.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(offset, offset + n)))
    return path


def test_builtin_task_evaluates_its_heldout_split(tmp_path) -> None:
    rows = _trainer(tmp_path, "data.source=arithmetic", "eval.limit=20").eval_rows()
    assert len(rows) == 20 and all("answer" in r for r in rows)


def test_single_file_source_has_no_heldout_split(tmp_path, caplog) -> None:
    train = _jsonl(tmp_path / "train.jsonl", 8)
    assert _trainer(tmp_path, f"data.source={train}").eval_rows() == []
    assert "no held-out split" in caplog.text
    held = _jsonl(tmp_path / "held.jsonl", 5, offset=100)
    rows = _trainer(tmp_path, f"data.source={train}", f"eval.source={held}").eval_rows()
    assert [r["answer"] for r in rows] == ["101", "102", "103", "104", "105"]


def test_missing_split_is_one_line(tmp_path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    _jsonl(folder / "train.jsonl", 4)
    with pytest.raises(UserError, match="eval.split='test'") as err:
        _trainer(tmp_path, f"data.source={folder}").eval_rows()
    assert "\n" not in str(err.value)
