"""GSM8K (openai/gsm8k): grade-school word problems whose answers end in ``#### <number>``.

Records: ``question``; ``answer`` = the number after ``####`` with thousands commas removed
("1,234" -> "1234"); ``solution`` = the full worked solution, kept for inspection and SFT.
Local copies: a folder with ``train.jsonl``/``test.jsonl`` (the GitHub release's layout), any table
with question/answer columns in that form, or a hub snapshot folder.
"""

from __future__ import annotations

import datasets

from grpo_ray.data.catalog import BuiltinDataset, LoadRequest, register_dataset
from grpo_ray.data.sources import DataSourceError, load_table_builtin, require_columns

HUB_ID = "openai/gsm8k"
DEFAULT_SUBSET = "main"
LOCAL_HINT = f"download {HUB_ID} elsewhere and pass data.source=/path/to/folder with train.jsonl/test.jsonl"


def extract_final_answer(solution: str) -> str | None:
    """The final answer of a GSM8K solution, or ``None`` without a ``####`` marker.

    >>> extract_final_answer("48/2 = <<48/2=24>>24 clips.\\n#### 1,072")
    '1072'
    """
    if "####" not in solution:
        return None
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def looks_like_gsm8k(table: datasets.Dataset) -> bool:
    """True for a table with question/answer columns whose first answer has a ``####`` marker."""
    if not {"question", "answer"} <= set(table.column_names) or len(table) == 0:
        return False
    return isinstance(table[0]["answer"], str) and "####" in table[0]["answer"]


def convert_gsm8k(table: datasets.Dataset, origin: str) -> datasets.Dataset:
    """question/answer rows -> records with ``question``, ``answer`` (final number), ``solution``."""
    require_columns(table, {"question column": "question", "answer column": "answer"}, origin)

    def split_answer(row: dict, index: int) -> dict:
        final = extract_final_answer(row["answer"] or "")
        if final is None:
            raise DataSourceError(f"{origin}: row {index} has no '#### <answer>' line in its answer")
        return {"answer": final, "solution": row["answer"]}

    return table.map(split_answer, with_indices=True, desc="gsm8k answers")


def load_gsm8k(request: LoadRequest) -> datasets.Dataset:
    """GSM8K records for ``request.split`` ("train" 7473 rows, "test" 1319) from disk or the hub."""
    return load_table_builtin(request, HUB_ID, DEFAULT_SUBSET, "gsm8k", LOCAL_HINT, convert_gsm8k)


GSM8K = register_dataset(BuiltinDataset("gsm8k", load_gsm8k, recognise=looks_like_gsm8k, convert=convert_gsm8k))
