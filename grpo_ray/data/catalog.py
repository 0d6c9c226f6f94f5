"""The registry of built-in datasets (``DATASETS``) and what each entry provides.

A built-in turns a request (split, subset, optional local folder) into *records*: a
``datasets.Dataset`` with a ``question`` column (the user turn, verbatim), an ``answer`` column
(str, what rewards compare against) and any extra columns worth keeping. The loader adds the
system prompt and the chat-format ``prompt`` column; built-ins never see the tag style.

Entries register themselves from their own modules (gsm8k.py, pubmedqa.py, medical_o1.py,
arithmetic.py). ``grpo_ray.data.loader`` imports them all, so take the registry from there (or as
``grpo_ray.data.DATASETS``) to see every entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grpo_ray.utils.registry import Registry

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class LoadRequest:
    """What the user asked for. ``data_dir`` None means "from the hub" (or generated)."""

    split: str
    data_dir: Path | None = None
    subset: str | None = None
    limit: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset grpo_ray knows by name.

    load: request -> records (columns ``question``, ``answer``, extras).
    instruction: a line appended to the tag style's default system prompt.
    owns_path: true for a local path in this dataset's own raw layout (e.g. ``ori_pqal.json``),
        which no generic table reader understands.
    recognise / convert: for datasets whose raw form is an ordinary table (GSM8K's question and
        "... #### 72" answer): does a table look like this dataset, and turn it into records.
        The ``str`` argument of ``convert`` names the origin, for errors.
    """

    name: str
    load: Callable[[LoadRequest], datasets.Dataset]
    instruction: str = ""
    owns_path: Callable[[Path], bool] | None = None
    recognise: Callable[[datasets.Dataset], bool] | None = None
    convert: Callable[[datasets.Dataset, str], datasets.Dataset] | None = None


DATASETS: Registry[BuiltinDataset] = Registry("dataset")


def register_dataset(builtin: BuiltinDataset) -> BuiltinDataset:
    """Add ``builtin`` to ``DATASETS`` under its name."""
    return DATASETS.register(builtin.name)(builtin)


def builtin_datasets() -> list[BuiltinDataset]:
    """Every registered built-in, in name order."""
    return [DATASETS.get(name) for name in DATASETS.names()]
