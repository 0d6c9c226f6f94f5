"""Reading raw tables: local files and folders, and the Hugging Face hub.

Every user-facing failure here is a ``DataSourceError`` whose message is one line naming the
source and the fix. Tables come back as ``datasets.Dataset`` with their original columns; turning
rows into prompts is ``prompts.py``'s job.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import datasets

from grpo_ray.data.paths import TABLE_BUILDERS, DataSourceError, local_path  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def read_local_table(path: Path, split: str, subset: str | None = None) -> datasets.Dataset:
    """Rows of a local file or folder, with the file's own columns.

    A file (.csv, .jsonl, .json, .parquet) is the whole dataset whatever ``split`` is. In a folder,
    ``{split}.{csv,jsonl,json,parquet}`` is the split's file; a folder without one is handed to
    ``datasets.load_dataset(folder, subset, split=split)``, which reads hub snapshots
    (``main/train-00000-of-00001.parquet``) and single-file folders.
    """
    if path.is_file():
        return _read_file(path)
    candidates = [path / f"{split}{suffix}" for suffix in TABLE_BUILDERS]
    found = [p for p in candidates if p.is_file()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataSourceError(f"{path}: several files for split {split!r} ({names}); keep one")
    if found:
        return _read_file(found[0])
    try:
        return datasets.load_dataset(str(path), subset, split=split)
    except (ValueError, FileNotFoundError) as err:  # datasets' "Unknown split", empty folder
        files = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataSourceError(
            f"{path}: no {split}.csv/.jsonl/.json/.parquet here and datasets could not read the "
            f"folder ({reason}); it holds: {files}"
        ) from err


def _read_file(path: Path) -> datasets.Dataset:
    builder = TABLE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        known = ", ".join(TABLE_BUILDERS)
        raise DataSourceError(f"{path}: unsupported file type {path.suffix!r}; use one of {known}")
    return datasets.load_dataset(builder, data_files=str(path), split="train")


def load_hub_table(hub_id: str, subset: str | None, split: str, *, label: str, local_hint: str) -> datasets.Dataset:
    """``datasets.load_dataset(hub_id, subset, split=split)``, failing fast and in one line.

    ``label`` names the dataset in errors; ``local_hint`` tells the user how to load it from disk
    instead. When the hub's host does not accept a connection we fail at once: otherwise
    ``huggingface_hub`` retries for ~25 s before giving up.
    """
    unreachable = _hub_unreachable_reason()
    if unreachable:
        raise DataSourceError(
            f"{label}: cannot reach the Hugging Face hub ({unreachable}); {local_hint} "
            "(or set HF_HUB_OFFLINE=1 to use a copy in the Hugging Face cache)"
        )
    try:
        return datasets.load_dataset(hub_id, subset, split=split)
    except ConnectionError as err:  # how datasets reports offline mode and unreachable hosts
        why = "offline" if _offline() else "connection failed"
        raise DataSourceError(
            f"{label}: cannot reach the Hugging Face hub ({why}) and {hub_id} is not in the local cache; {local_hint}"
        ) from err
    except datasets.exceptions.DatasetNotFoundError as err:
        raise DataSourceError(f"{label}: {hub_id} not found on the Hugging Face hub; {local_hint}") from err


def _offline() -> bool:
    # datasets < 2.19 only had HF_DATASETS_OFFLINE
    return bool(getattr(datasets.config, "HF_HUB_OFFLINE", False) or datasets.config.HF_DATASETS_OFFLINE)


def _hub_unreachable_reason(timeout_s: float = 3.0) -> str | None:
    """Why the hub is certainly unreachable, or ``None`` if it may be reachable.

    Offline mode is left to ``datasets`` (it answers at once and may find a cached copy). Behind a
    proxy a direct connection says nothing, so we do not probe there.
    """
    if _offline() or any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        return f"{host}:{port} unreachable: {err.strerror or err}"
    return None


def require_columns(table: datasets.Dataset, columns: dict[str, str], origin: str) -> None:
    """Raise one line if a mapped column is missing. ``columns`` maps argument name -> column."""
    for argument, column in columns.items():
        if column not in table.column_names:
            available = ", ".join(table.column_names)
            raise DataSourceError(f"{origin}: {argument} {column!r} not found; available columns: {available}")


def load_table_builtin(request, hub_id: str, default_subset: str, label: str, local_hint: str, convert):
    """A built-in that is one table: read the local copy in ``request.data_dir`` or the hub's, then
    ``convert(table, origin)`` it into records."""
    if request.data_dir is not None:
        table = read_local_table(request.data_dir, request.split, request.subset)
        return convert(table, str(request.data_dir))
    table = load_hub_table(hub_id, request.subset or default_subset, request.split, label=label, local_hint=local_hint)
    return convert(table, hub_id)
