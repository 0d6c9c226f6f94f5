"""Resolving ``model.name_or_path``: built-in models shipped in the package, local folders, hub ids."""

from __future__ import annotations

from pathlib import Path

BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"


def builtin_models() -> list[str]:
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model_path(name_or_path: str) -> str:
    """``builtin:NAME`` -> the packaged folder; a local folder stays; anything else is a hub id."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        name = name_or_path[len(BUILTIN_PREFIX):]
        folder = BUILTIN_DIR / name
        if not (folder / "config.json").is_file():
            known = ", ".join(BUILTIN_PREFIX + n for n in builtin_models()) or "none are installed"
            raise FileNotFoundError(f"model.name_or_path={name_or_path!r}: no such built-in model (known: {known})")
        return str(folder)
    return name_or_path
