"""PubMedQA, labelled part (qiaojin/PubMedQA config "pqa_labeled"): yes/no/maybe questions on abstracts.

Records: ``question`` = the abstract's context paragraphs then the question (see
``format_question``); ``answer`` = final_decision ("yes" | "no" | "maybe"); ``long_answer`` (the
abstract's conclusion) and ``pubid`` (str) kept.

Splits follow the paper: "test" is the official 500 questions, "train" the other 500, "all" the
1000. With a local ``ori_pqal.json`` (the GitHub release) the test ids come from
``test_ground_truth.json`` beside it when present; otherwise, and for the hub copy (which has a
single 1000-row split), ``official_test_pubids`` recomputes them the way the release's
``split_dataset.py`` does (seeded, stratified by label; checked against test_ground_truth.json in
the tests). That recomputation depends on the rows being in ``ori_pqal.json``'s order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets

from grpo_ray.data.catalog import BuiltinDataset, LoadRequest, register_dataset
from grpo_ray.data.sources import DataSourceError, load_hub_table, read_local_table, require_columns

HUB_ID = "qiaojin/PubMedQA"
SUBSET = "pqa_labeled"
SPLITS = ("train", "test", "all")
PQAL_FILE = "ori_pqal.json"
TRUTH_FILE = "test_ground_truth.json"
LOCAL_HINT = (
    "download ori_pqal.json and test_ground_truth.json from github.com/pubmedqa/pubmedqa elsewhere "
    "and pass data.source=/path/to/folder holding them"
)
# Appended to the tag style's system prompt: the reward compares the answer tag with one word.
INSTRUCTION = "Inside the <answer> tags write only one word: yes, no or maybe."


def format_question(question: str, contexts: Sequence[str], labels: Sequence[str] = ()) -> str:
    """The user turn: labelled context paragraphs, a blank line, then the question.

    >>> print(format_question("Is it?", ["A.", "B."], ["BACKGROUND", "UNLABELLED"]))
    Context:
    BACKGROUND: A.
    <BLANKLINE>
    B.
    <BLANKLINE>
    Question: Is it?
    """
    if len(labels) != len(contexts):
        labels = [""] * len(contexts)
    paragraphs = [
        f"{label}: {text}" if label and label != "UNLABELLED" else text for label, text in zip(labels, contexts)
    ]
    return "Context:\n" + "\n\n".join(paragraphs) + f"\n\nQuestion: {question}"


def official_test_pubids(pubids: Sequence[str], decisions: Sequence[str]) -> set[str]:
    """The official 500-question test set, recomputed from the 1000 labelled rows in release order.

    The release's script seeds Python's ``random`` with 0, shuffles each label's ids (yes, no,
    maybe, in that order) and puts the second half of each in the test set.
    """
    rng = random.Random(0)
    by_label: dict[str, list[str]] = {"yes": [], "no": [], "maybe": []}
    for pubid, decision in zip(pubids, decisions):
        by_label[decision].append(pubid)
    test: set[str] = set()
    for ids in by_label.values():
        rng.shuffle(ids)
        # ceil(n / 2) go to training; balanced for the 1000 labelled rows, so the script's
        # rebalancing step (for odd splits) never runs and is not reproduced
        test.update(ids[(len(ids) + 1) // 2 :])
    return test


def owns_pubmedqa_path(path: Path) -> bool:
    """True for ``ori_pqal.json`` itself or a folder holding it."""
    return path.name == PQAL_FILE or (path / PQAL_FILE).is_file()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataSourceError(f"pubmedqa: unknown split {split!r}; known: {', '.join(SPLITS)}")


def _in_split(is_test: bool, split: str) -> bool:
    return split == "all" or is_test == (split == "test")


def _records(rows: Iterable[dict], test_ids: set[str], split: str) -> datasets.Dataset:
    """rows with pubid, question, contexts, labels, decision, long_answer -> records."""
    records = [
        {
            "question": format_question(row["question"], row["contexts"], row["labels"]),
            "answer": row["decision"],
            "long_answer": row["long_answer"],
            "pubid": row["pubid"],
        }
        for row in rows
        if _in_split(row["pubid"] in test_ids, split)
    ]
    return datasets.Dataset.from_list(records)


def read_ori_pqal(path: Path, split: str) -> datasets.Dataset:
    """Records from the release's ``ori_pqal.json`` (pmid -> {QUESTION, CONTEXTS, LABELS, ...})."""
    _check_split(split)
    pqal_file = path if path.is_file() else path / PQAL_FILE
    data = json.loads(pqal_file.read_text())
    truth_file = pqal_file.with_name(TRUTH_FILE)
    if truth_file.is_file():
        test_ids = set(json.loads(truth_file.read_text()))
    else:
        test_ids = official_test_pubids(list(data), [info["final_decision"] for info in data.values()])
    rows = (
        {
            "pubid": pmid,
            "question": info["QUESTION"],
            "contexts": info["CONTEXTS"],
            "labels": info.get("LABELS", ()),
            "decision": info["final_decision"],
            "long_answer": info.get("LONG_ANSWER", ""),
        }
        for pmid, info in data.items()
    )
    return _records(rows, test_ids, split)


def convert_hub_table(table: datasets.Dataset, split: str, origin: str) -> datasets.Dataset:
    """Records from the hub layout: pubid, question, context{contexts, labels}, long_answer,
    final_decision, all 1000 rows in one table."""
    _check_split(split)
    for column in ("pubid", "question", "context", "final_decision"):
        require_columns(table, {"column": column}, origin)
    pubids = [str(p) for p in table["pubid"]]
    test_ids = official_test_pubids(pubids, table["final_decision"])
    rows = (
        {
            "pubid": pubid,
            "question": row["question"],
            "contexts": row["context"]["contexts"],
            "labels": row["context"].get("labels") or (),
            "decision": row["final_decision"],
            "long_answer": row.get("long_answer") or "",
        }
        for pubid, row in zip(pubids, table)
    )
    return _records(rows, test_ids, split)


def load_pubmedqa(request: LoadRequest) -> datasets.Dataset:
    """PubMedQA records for ``request.split`` ("train" | "test" | "all", 500/500/1000 rows)."""
    _check_split(request.split)
    if request.subset not in (None, SUBSET):
        raise DataSourceError(f"pubmedqa: only subset {SUBSET!r} is built in, got {request.subset!r}")
    if request.data_dir is not None and owns_pubmedqa_path(request.data_dir):
        return read_ori_pqal(request.data_dir, request.split)
    if request.data_dir is not None:  # e.g. a hub snapshot folder
        table = read_local_table(request.data_dir, "train", SUBSET)
        return convert_hub_table(table, request.split, str(request.data_dir))
    table = load_hub_table(HUB_ID, SUBSET, "train", label="pubmedqa", local_hint=LOCAL_HINT)
    return convert_hub_table(table, request.split, HUB_ID)


PUBMEDQA = register_dataset(
    BuiltinDataset("pubmedqa", load_pubmedqa, instruction=INSTRUCTION, owns_path=owns_pubmedqa_path)
)
