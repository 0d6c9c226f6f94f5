"""GSM8K from the shared local copy: split sizes, answer extraction, prompt shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grpo_ray.data import load_prompt_dataset
from grpo_ray.data.gsm8k import extract_final_answer
from grpo_ray.data.formats import get_tag_style

from .conftest import system_turn, user_turn

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def gsm8k_dir(shared_data: Path) -> Path:
    return shared_data / "gsm8k"


@pytest.fixture(scope="module")
def raw_train(gsm8k_dir: Path) -> list[dict]:
    with open(gsm8k_dir / "train.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def train(gsm8k_dir: Path):
    # a folder path: recognised as GSM8K by its question / "#### n" answer columns
    return load_prompt_dataset(str(gsm8k_dir), split="train")


@pytest.fixture(scope="module")
def test(gsm8k_dir: Path):
    # the built-in name with a local copy
    return load_prompt_dataset("gsm8k", data_dir=gsm8k_dir, split="test")


def test_split_sizes(train, test) -> None:
    assert len(train) == 7473
    assert len(test) == 1319


@pytest.mark.parametrize(
    ("index", "answer"),
    [(0, "72"), (1, "10"), (345, "1080"), (367, "850000"), (462, "2250"), (5715, "-7")],
)
def test_answer_is_the_number_after_the_marker(train, raw_train, index: int, answer: str) -> None:
    row = train[index]
    assert row["answer"] == answer
    assert row["solution"] == raw_train[index]["answer"]  # the full worked solution, untouched
    assert row["question"] == raw_train[index]["question"]


def test_known_rows(train, test) -> None:
    assert user_turn(train[0]).startswith("Natalia sold clips to 48 of her friends in April")
    assert user_turn(test[-1]).startswith("Henry and 3 of his friends order 7 pizzas")
    assert test[-1]["answer"] == "14"


def test_prompt_has_system_then_question_and_never_the_answer(train) -> None:
    row = train[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert system_turn(row) == get_tag_style("reasoning").system_prompt
    assert user_turn(row) == row["question"]
    assert "####" not in user_turn(row)


def test_every_answer_was_extracted(train, test) -> None:
    for rows in (train, test):
        assert all(a and "#" not in a and "," not in a for a in rows["answer"])


def test_extract_final_answer() -> None:
    assert extract_final_answer("a = 3\n#### 1,234") == "1234"
    assert extract_final_answer("no marker") is None
