"""Generic local files and folders: formats, column mapping, split files, detection, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grpo_ray.data import DataSourceError, load_prompt_dataset

from .conftest import user_turn

pytestmark = pytest.mark.unit

ROWS = [
    {"problem": "What is 2 + 3?", "label": 5, "difficulty": "easy"},
    {"problem": "What is 7 * 6?", "label": 42, "difficulty": "easy"},
    {"problem": "What is 100 - 1?", "label": 99, "difficulty": "medium"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(r[c]) for c in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("writer,suffix", [(write_csv, ".csv"), (write_jsonl, ".jsonl"), (write_parquet, ".parquet")])
def test_file_with_column_mapping(tmp_path: Path, writer, suffix: str) -> None:
    path = writer(tmp_path / f"mine{suffix}", ROWS)
    ds = load_prompt_dataset(str(path), question_column="problem", answer_column="label")
    assert len(ds) == 3
    assert [user_turn(r) for r in ds] == [r["problem"] for r in ROWS]
    assert ds["answer"] == ["5", "42", "99"]  # numbers become the strings rewards compare
    assert ds["difficulty"] == ["easy", "easy", "medium"]  # extra columns kept
    assert all(r["answer"] not in json.dumps(r["prompt"]) for r in ds)


def test_default_columns_are_question_and_answer(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.json", [{"question": "Capital of France?", "answer": "Paris"}])
    (row,) = load_prompt_dataset(str(path))
    assert user_turn(row) == "Capital of France?" and row["answer"] == "Paris"


def test_missing_column_names_it_and_lists_the_others(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mine.csv", ROWS)
    with pytest.raises(DataSourceError) as err:
        load_prompt_dataset(str(path), question_column="problem", answer_column="solution")
    message = str(err.value)
    assert "\n" not in message
    assert "answer_column 'solution' not found" in message
    assert "available columns: problem, label, difficulty" in message


def test_missing_default_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mine.csv", ROWS)
    with pytest.raises(DataSourceError, match=r"question_column 'question' not found; available columns: problem"):
        load_prompt_dataset(str(path))


def test_folder_picks_the_split_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", ROWS)
    write_parquet(tmp_path / "test.parquet", ROWS[:1])
    kwargs = {"question_column": "problem", "answer_column": "label"}
    assert len(load_prompt_dataset(str(tmp_path), split="train", **kwargs)) == 3
    assert len(load_prompt_dataset(str(tmp_path), split="test", **kwargs)) == 1
    with pytest.raises(DataSourceError, match="no validation.csv/.jsonl/.json/.parquet here"):
        load_prompt_dataset(str(tmp_path), split="validation", **kwargs)


def test_folder_with_two_files_for_a_split_is_ambiguous(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", ROWS)
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(DataSourceError, match=r"several files for split 'train' \(train.csv, train.jsonl\)"):
        load_prompt_dataset(str(tmp_path), question_column="problem", answer_column="label")


def test_gsm8k_shaped_table_is_recognised(tmp_path: Path) -> None:
    rows = [{"question": "2 + 2?", "answer": "2 + 2 = 4\n#### 4"}, {"question": "Big?", "answer": "#### 1,500"}]
    write_jsonl(tmp_path / "test.jsonl", rows)
    ds = load_prompt_dataset(str(tmp_path), split="test")
    assert ds["answer"] == ["4", "1500"] and ds["solution"] == [r["answer"] for r in rows]
    # explicit columns opt out of the detection
    raw = load_prompt_dataset(str(tmp_path), split="test", question_column="question", answer_column="answer")
    assert raw["answer"] == [r["answer"] for r in rows]


def test_gsm8k_row_without_marker_is_named(tmp_path: Path) -> None:
    rows = [{"question": "2 + 2?", "answer": "#### 4"}, {"question": "3 + 3?", "answer": "6"}]
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    with pytest.raises(DataSourceError, match=r"g.jsonl: row 1 has no '#### <answer>' line in its answer$"):
        load_prompt_dataset(str(path))


def test_medical_o1_release_file_is_recognised(tmp_path: Path) -> None:
    rows = [{"Question": "Fever and stiff neck?", "Complex_CoT": "Think meningitis.", "Response": "Meningitis"}]
    path = tmp_path / "medical_o1_sft.json"
    path.write_text(json.dumps(rows))  # the release is one JSON list, not JSON lines
    for ds in (load_prompt_dataset(str(path)), load_prompt_dataset("medical-o1", data_dir=path)):
        (row,) = ds
        assert user_turn(row) == "Fever and stiff neck?"
        assert row["answer"] == "Meningitis"
        assert row["reasoning"] == "Think meningitis."  # kept, never in the prompt
        assert "Think meningitis." not in json.dumps(row["prompt"])


def test_rows_without_question_or_answer_are_dropped(tmp_path: Path) -> None:
    rows = [
        {"question": "q1", "answer": "a1"},
        {"question": "q2", "answer": None},
        {"question": "  ", "answer": "a3"},
        {"question": "q4", "answer": "a4"},
    ]
    ds = load_prompt_dataset(str(write_jsonl(tmp_path / "x.jsonl", rows)))
    assert ds["question"] == ["q1", "q4"]


def test_limit_samples_with_the_seed(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(50)]
    path = str(write_jsonl(tmp_path / "x.jsonl", rows))
    a = load_prompt_dataset(path, limit=10, seed=1)["answer"]
    assert len(a) == 10 and len(set(a)) == 10
    assert load_prompt_dataset(path, limit=10, seed=1)["answer"] == a
    assert load_prompt_dataset(path, limit=10, seed=2)["answer"] != a
    assert len(load_prompt_dataset(path, limit=500)) == 50
    with pytest.raises(DataSourceError, match="limit must be a positive"):
        load_prompt_dataset(path, limit=0)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"source": "./missing.csv"}, r"^\./missing\.csv: no such file or folder$"),
        ({"source": "data/missing.parquet"}, r"no such file or folder"),
        ({"source": "gsm8"}, r"unknown dataset 'gsm8' \(did you mean 'gsm8k'\?\); known: arithmetic, gsm8k"),
        ({"source": "gsm8k", "answer_column": "x"}, r"^gsm8k: question_column/answer_column apply to files"),
        ({"source": "gsm8k", "data_dir": "/no/such/dir"}, r"^gsm8k: data_dir /no/such/dir does not exist$"),
        ({"source": "org/name", "data_dir": "/tmp"}, r"^data_dir is for built-in datasets"),
        ({"source": "arithmetic", "data_dir": "/tmp"}, r"^arithmetic: the task is generated"),
    ],
)
def test_user_mistakes_are_one_line(kwargs: dict, pattern: str) -> None:
    with pytest.raises(DataSourceError, match=pattern) as err:
        load_prompt_dataset(**kwargs)
    assert "\n" not in str(err.value)


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DataSourceError, match=r"unsupported file type '.txt'; use one of .csv, .jsonl"):
        load_prompt_dataset(str(path))
