"""medical-o1-reasoning-SFT (FreedomIntelligence/medical-o1-reasoning-SFT, config "en").

Columns Question, Complex_CoT, Response. Records: ``question`` = Question, ``answer`` = Response,
``reasoning`` = Complex_CoT. GRPO never trains on ``reasoning`` (the point is that the model finds
its own); it is kept only for an optional SFT warm-up. The hub copy has a "train" split only.
Local copies: the released ``medical_o1_sft.json`` (a file, or a folder holding it), or any table
with Question/Response columns.
"""

from __future__ import annotations

import datasets

from grpo_ray.data.catalog import BuiltinDataset, LoadRequest, register_dataset
from grpo_ray.data.sources import load_table_builtin, require_columns

HUB_ID = "FreedomIntelligence/medical-o1-reasoning-SFT"
DEFAULT_SUBSET = "en"
LOCAL_HINT = f"download {HUB_ID} elsewhere and pass data.source=/path/to/medical_o1_sft.json (or a folder holding it)"
_RENAMES = {"Question": "question", "Response": "answer", "Complex_CoT": "reasoning"}


def looks_like_medical_o1(table: datasets.Dataset) -> bool:
    """True for a table with the dataset's Question and Response columns."""
    return {"Question", "Response"} <= set(table.column_names)


def convert_medical_o1(table: datasets.Dataset, origin: str) -> datasets.Dataset:
    """Question/Complex_CoT/Response rows -> records with ``question``, ``answer``, ``reasoning``."""
    require_columns(table, {"question column": "Question", "answer column": "Response"}, origin)
    return table.rename_columns({k: v for k, v in _RENAMES.items() if k in table.column_names})


def load_medical_o1(request: LoadRequest) -> datasets.Dataset:
    """medical-o1 records for ``request.split`` from disk or the hub."""
    return load_table_builtin(request, HUB_ID, DEFAULT_SUBSET, "medical-o1", LOCAL_HINT, convert_medical_o1)


MEDICAL_O1 = register_dataset(
    BuiltinDataset("medical-o1", load_medical_o1, recognise=looks_like_medical_o1, convert=convert_medical_o1)
)
