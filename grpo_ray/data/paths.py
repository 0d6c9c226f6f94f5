"""Telling a local table from a hub id, without importing ``datasets`` (commands check their inputs
before the heavy libraries load)."""

from __future__ import annotations

from pathlib import Path

# file suffix -> the ``datasets`` packaged builder that reads it (through pyarrow)
TABLE_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DataSourceError(ValueError):
    """A dataset could not be found or read as asked. ``str()`` is one line saying what to change."""


def local_path(source: str) -> Path | None:
    """``source`` as an existing local path, or ``None`` when it is not one (then it may be a hub
    id). A source that can only be a path (absolute, ``./``, ``~``, or a table suffix) but does
    not exist raises instead of being sent to the hub."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    if source.startswith(("/", ".", "~")) or path.suffix.lower() in TABLE_BUILDERS:
        raise DataSourceError(f"{source}: no such file or folder")
    return None
