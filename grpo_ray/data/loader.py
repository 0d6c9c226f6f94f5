"""``load_prompt_dataset``: from a source string to rows ready for GRPO.

Source resolution, first match wins:

1. A built-in name from ``DATASETS`` ("gsm8k", "pubmedqa", "medical-o1", "arithmetic"). It loads
   from the hub, or from a local copy when ``data_dir`` names one.
2. An existing local file or folder. A layout that belongs to one built-in (a folder holding
   PubMedQA's ``ori_pqal.json``) is loaded by it. Anything else is read as a table: a
   .csv/.jsonl/.json/.parquet file, or a folder's ``{split}.{ext}`` file (``sources.py``).
3. Otherwise a hub id: ``datasets.load_dataset(source, subset, split=split)``.

A table from 2 or 3 with no column arguments is offered to the built-ins first, so a GSM8K folder
(question + "... #### 72" answers) or medical-o1 file (Question/Response) gets that dataset's
handling. Otherwise ``question_column`` / ``answer_column`` (default "question" / "answer") map it.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import datasets

# Importing the built-in modules registers them in DATASETS.
from grpo_ray.data import arithmetic, gsm8k, medical_o1, pubmedqa  # noqa: F401
from grpo_ray.data.catalog import DATASETS, BuiltinDataset, LoadRequest, builtin_datasets
from grpo_ray.data.prompts import PromptRecipe, attach_prompts, resolve_system_prompt
from grpo_ray.data.sources import (
    TABLE_BUILDERS,
    DataSourceError,
    load_hub_table,
    local_path,
    read_local_table,
    require_columns,
)
from grpo_ray.data.formats import get_tag_style

logger = logging.getLogger(__name__)

_TABLE_HINT = (
    f"to use a local copy pass data.source=/path/to/file ({'/'.join(TABLE_BUILDERS)}) or a folder "
    "of {split}.<ext> files"
)


def load_prompt_dataset(
    source: str | os.PathLike[str],
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    question_column: str | None = None,
    answer_column: str | None = None,
    system_prompt: str | None = None,
    tag_style: str = "reasoning",
    subset: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    demonstrations: Sequence[tuple[str, str]] = (),
    assistant_prefix: str = "",
) -> datasets.Dataset:
    """Rows ``{"prompt": [system, user], "answer": str, ...extra columns}`` for GRPO.

    source: built-in name, local path or hub id (see the module docstring).
    split: "train" / "test" (PubMedQA also "all"); ignored for a single local file.
    data_dir: a local copy of a built-in dataset (its folder or file) instead of the hub.
    question_column / answer_column: table columns for the user turn and the reference answer;
        not for built-ins. Answers are turned into ``str``; the table's other columns are kept.
    system_prompt: used verbatim; ``None`` takes the tag style's default (plus the dataset's
        instruction line, e.g. PubMedQA's "yes, no or maybe"); "" means no system message.
    subset: hub config name ("main" for GSM8K); for "arithmetic" "one_step" / "two_step".
    limit: keep this many rows, sampled with ``seed``; for arithmetic "train", how many to make.
    seed: the ``limit`` sample and the arithmetic generator.
    demonstrations: (question, reply) pairs put before the question as earlier chat turns.
    assistant_prefix: the start of the reply, prefilled (see ``PromptRecipe``).

    Rows with an empty question or answer are dropped with a warning. Errors a user can fix
    raise ``DataSourceError`` with a one-line message.
    """
    source = os.fspath(source)
    get_tag_style(tag_style)  # fail on a bad name before any loading
    if limit is not None and limit < 1:
        raise DataSourceError(f"limit must be a positive number of rows, got {limit}")
    request = LoadRequest(
        split=split,
        data_dir=Path(data_dir).expanduser() if data_dir is not None else None,
        subset=subset,
        limit=limit,
        seed=seed,
    )
    records, question_key, builtin = _load_records(source, request, question_column, answer_column)
    records = drop_incomplete(records, question_key, source)
    records = sample_rows(records, limit, seed)
    system = resolve_system_prompt(system_prompt, tag_style, builtin.instruction if builtin else "")
    recipe = PromptRecipe(system, tuple(tuple(d) for d in demonstrations), assistant_prefix)
    return attach_prompts(records, recipe, question_key)


def _load_records(
    source: str, request: LoadRequest, question_column: str | None, answer_column: str | None
) -> tuple[datasets.Dataset, str, BuiltinDataset | None]:
    """(records, name of the question column, the built-in that made them or None)."""
    columns_given = question_column is not None or answer_column is not None
    if source in DATASETS:
        if columns_given:
            raise DataSourceError(
                f"{source}: question_column/answer_column apply to files and hub ids, not to the "
                "built-in dataset; leave them unset"
            )
        if request.data_dir is not None and not request.data_dir.exists():
            raise DataSourceError(f"{source}: data_dir {request.data_dir} does not exist")
        builtin = DATASETS.get(source)
        return builtin.load(request), "question", builtin
    if request.data_dir is not None:
        raise DataSourceError(
            f"data_dir is for built-in datasets ({', '.join(DATASETS.names())}); to read "
            f"{request.data_dir} pass it as the source instead"
        )
    path = local_path(source)
    if path is not None:
        owner = None if columns_given else _owner_of_path(path)
        if owner is not None:
            return owner.load(replace(request, data_dir=path)), "question", owner
        table = read_local_table(path, request.split, request.subset)
    else:
        _raise_if_misspelt_builtin(source)
        table = load_hub_table(source, request.subset, request.split, label=source, local_hint=_TABLE_HINT)
    return records_from_table(table, question_column, answer_column, source)


def _owner_of_path(path: Path) -> BuiltinDataset | None:
    return next((b for b in builtin_datasets() if b.owns_path and b.owns_path(path)), None)


def _raise_if_misspelt_builtin(source: str) -> None:
    # Hub ids are "owner/name"; a bare word close to a built-in name is a typo, not a hub lookup
    # (which would fail later, and slowly, with a less useful message).
    if "/" not in source and difflib.get_close_matches(source, DATASETS.names(), n=1):
        raise DataSourceError(f"{DATASETS.unknown_message(source)}; it is not a local path either")


def records_from_table(
    table: datasets.Dataset, question_column: str | None, answer_column: str | None, origin: str
) -> tuple[datasets.Dataset, str, BuiltinDataset | None]:
    """A raw table -> (records, question column, built-in or None).

    Without column arguments a built-in that recognises the table converts it. Otherwise the
    mapped answer column is copied, as ``str``, into ``answer`` (replacing any column of that
    name) and the question column is used as it is.
    """
    if question_column is None and answer_column is None:
        for builtin in builtin_datasets():
            if builtin.recognise and builtin.convert and builtin.recognise(table):
                logger.info("%s: recognised as the %s dataset", origin, builtin.name)
                return builtin.convert(table, origin), "question", builtin
    question_column = question_column or "question"
    answer_column = answer_column or "answer"
    require_columns(table, {"question_column": question_column, "answer_column": answer_column}, origin)
    records = table.map(
        lambda row: {"answer": "" if row[answer_column] is None else str(row[answer_column])},
        desc="answers",
    )
    return records, question_column, None


def drop_incomplete(records: datasets.Dataset, question_column: str, origin: str) -> datasets.Dataset:
    """``records`` without rows whose question or answer is missing or blank (logged)."""
    keep = [
        i
        for i, (question, answer) in enumerate(zip(records[question_column], records["answer"]))
        if question is not None and str(question).strip() and answer is not None and answer.strip()
    ]
    if not keep:
        raise DataSourceError(f"{origin}: no rows with both a question and an answer")
    if len(keep) < len(records):
        logger.warning(
            "%s: dropped %d of %d rows with an empty question or answer",
            origin,
            len(records) - len(keep),
            len(records),
        )
        records = records.select(keep)
    return records


def sample_rows(records: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """At most ``limit`` rows: a seeded random sample (a prefix could be one topic or one label,
    e.g. PubMedQA's file order); all rows, in order, when ``limit`` is None or not smaller."""
    if limit is None or limit >= len(records):
        return records
    return records.shuffle(seed=seed).select(range(limit))
