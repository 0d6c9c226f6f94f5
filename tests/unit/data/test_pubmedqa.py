"""PubMedQA from the shared copy of the GitHub release (ori_pqal.json + test_ground_truth.json)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from grpo_ray.data import DataSourceError, load_prompt_dataset
from grpo_ray.data.pubmedqa import INSTRUCTION, convert_hub_table, official_test_pubids
from grpo_ray.data.formats import get_tag_style

from .conftest import system_turn, user_turn

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pqal_dir(shared_data: Path) -> Path:
    return shared_data / "pubmedqa"


@pytest.fixture(scope="module")
def pqal(pqal_dir: Path) -> dict:
    return json.loads((pqal_dir / "ori_pqal.json").read_text())


@pytest.fixture(scope="module")
def truth(pqal_dir: Path) -> dict[str, str]:
    return json.loads((pqal_dir / "test_ground_truth.json").read_text())


@pytest.fixture(scope="module")
def test_split(pqal_dir: Path):
    return load_prompt_dataset(str(pqal_dir), split="test")


def test_test_split_is_the_official_500_with_their_labels(test_split, truth) -> None:
    assert len(test_split) == 500
    assert dict(zip(test_split["pubid"], test_split["answer"])) == truth


def test_train_is_the_other_500_and_all_is_1000(pqal_dir: Path, truth, pqal) -> None:
    train = load_prompt_dataset("pubmedqa", data_dir=pqal_dir, split="train")
    assert len(train) == 500 and not set(train["pubid"]) & set(truth)
    every = load_prompt_dataset(pqal_dir / "ori_pqal.json", split="all")  # the file itself, as a Path
    assert list(every["pubid"]) == list(pqal)
    assert set(every["answer"]) == {"yes", "no", "maybe"}


def test_prompt_holds_context_then_question(test_split, pqal) -> None:
    row = test_split[0]
    info = pqal[row["pubid"]]
    user = user_turn(row)
    assert user.startswith("Context:\n")
    assert user.endswith(f"\n\nQuestion: {info['QUESTION']}")
    for label, paragraph in zip(info["LABELS"], info["CONTEXTS"]):
        assert f"{label}: {paragraph}" in user
    assert row["long_answer"] == info["LONG_ANSWER"] and row["long_answer"] not in user


def test_system_prompt_asks_for_yes_no_maybe(test_split) -> None:
    assert system_turn(test_split[0]) == get_tag_style("reasoning").system_prompt + "\n" + INSTRUCTION
    assert "yes, no or maybe" in INSTRUCTION


def test_official_split_is_recomputed_without_the_truth_file(pqal, truth, tmp_path: Path, pqal_dir) -> None:
    # The hub copy has no test_ground_truth.json: the split must come out the same without it.
    assert official_test_pubids(list(pqal), [v["final_decision"] for v in pqal.values()]) == set(truth)
    (tmp_path / "ori_pqal.json").symlink_to(pqal_dir / "ori_pqal.json")
    alone = load_prompt_dataset(str(tmp_path), split="test")
    assert set(alone["pubid"]) == set(truth)


def test_hub_layout_is_converted_and_split(pqal, truth) -> None:
    hub_rows = [
        {
            "pubid": int(pmid),
            "question": info["QUESTION"],
            "context": {"contexts": info["CONTEXTS"], "labels": info["LABELS"]},
            "long_answer": info["LONG_ANSWER"],
            "final_decision": info["final_decision"],
        }
        for pmid, info in pqal.items()
    ]
    records = convert_hub_table(datasets.Dataset.from_list(hub_rows), "test", "hub")
    assert dict(zip(records["pubid"], records["answer"])) == truth
    assert records[0]["question"].startswith("Context:\n")


def test_unknown_split_is_one_line(pqal_dir: Path) -> None:
    with pytest.raises(DataSourceError, match=r"^pubmedqa: unknown split 'validation'; known: train, test, all$"):
        load_prompt_dataset(str(pqal_dir), split="validation")
