"""Finding reward functions by name, and calling a list of them on one batch.

A reward spec in the config is one of:

- a built-in name: ``"correctness"`` (see ``REWARDS.names()``);
- ``"package.module:function"``, importable from the worker's ``sys.path``;
- ``"path/to/file.py:function"``, relative to the working directory or absolute.

Every function follows TRL's convention, ``fn(prompts, completions, **kwargs) -> list[float |
None]`` with dataset columns as kwargs, so a reward written for TRL works here unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import math
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

from grpo_ray.utils.registry import Registry

RewardFn = Callable[..., Sequence[Any]]

REWARDS: Registry[RewardFn] = Registry("reward function")


class RewardSpecError(ValueError):
    """A reward spec names nothing usable. ``str()`` is one line saying what to change."""


_FILE_MODULES: dict[Path, ModuleType] = {}  # loaded once per process, by resolved path


def _callables_in(module: ModuleType) -> str:
    names = sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_") and callable(obj) and not inspect.isclass(obj)
        and getattr(obj, "__module__", None) == module.__name__
    )
    return ", ".join(names) if names else "none"


def _load_file(path_text: str, spec: str) -> ModuleType:
    path = Path(path_text).expanduser()
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not path.is_file():
        raise RewardSpecError(
            f"reward spec {spec!r}: file {str(path)!r} not found; give a path relative to "
            f"{os.getcwd()!r} or an absolute one"
        )
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    # A name unique per file, so two "rewards.py" in different folders do not collide.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"_grpo_ray_user_rewards_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise RewardSpecError(f"reward spec {spec!r}: cannot load {str(path)!r} as Python; is it a .py file?")
    module = importlib.util.module_from_spec(module_spec)
    # In sys.modules only while it runs (dataclasses look themselves up there). Left out after,
    # cloudpickle ships its functions by value, so Ray workers on other nodes need not have the file.
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)  # errors in the user's code keep their traceback
    finally:
        del sys.modules[module_name]
    _FILE_MODULES[path] = module
    return module


def _import_module(module_name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # Only a missing module named by the spec is a spec error; a missing import inside the
        # user's module is their bug and keeps its traceback.
        if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
            raise
        raise RewardSpecError(
            f"reward spec {spec!r}: module {module_name!r} is not importable ({e.name!r} not "
            f"found); install it, add its folder to PYTHONPATH, or use 'path/to/file.py:function'"
        ) from None


def _looks_like_path(text: str) -> bool:
    return text.endswith(".py") or "/" in text or os.sep in text


def resolve_reward(spec: str | RewardFn) -> RewardFn:
    """The reward function a spec names (see the module docstring); callables pass through.

    >>> resolve_reward("correctness").__name__
    'correctness_reward'
    >>> resolve_reward("grpo_ray.rewards.formatting:xml_count_reward").__name__
    'xml_count_reward'
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise RewardSpecError(
            f"reward spec {spec!r} is empty or not a string; give a name like 'correctness' or 'module:function'"
        )
    spec = spec.strip()
    if ":" not in spec:
        if _looks_like_path(spec):
            raise RewardSpecError(f"reward spec {spec!r} names a file but no function; write '{spec}:function_name'")
        if spec in REWARDS:
            return REWARDS.get(spec)
        raise RewardSpecError(
            f"{REWARDS.unknown_message(spec)}; or give 'package.module:function' or 'path/to/file.py:function'"
        )
    where, _, attr = spec.rpartition(":")
    if not where or not attr.isidentifier():
        raise RewardSpecError(f"reward spec {spec!r}: expected 'module:function' or 'path/to/file.py:function'")
    module = _load_file(where, spec) if _looks_like_path(where) else _import_module(where, spec)
    if not hasattr(module, attr):
        raise RewardSpecError(
            f"reward spec {spec!r}: {where!r} has no {attr!r}; functions defined there: {_callables_in(module)}"
        )
    fn = getattr(module, attr)
    if not callable(fn):
        raise RewardSpecError(f"reward spec {spec!r}: {attr!r} is a {type(fn).__name__}, not a function")
    return fn


def reward_name(fn: RewardFn) -> str:
    """A readable name for a reward function (partials and callable objects included)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", None) or type(fn).__name__


def _to_reward(value: Any, name: str, index: int) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes)):  # float("1") would work, but hides a bug
            raise TypeError
        reward = float(value)  # numpy and torch scalars included
    except (TypeError, ValueError):
        raise TypeError(
            f"reward function {name!r} returned {type(value).__name__} {value!r:.40} at index {index}; "
            f"rewards must be numbers or None"
        ) from None
    if math.isnan(reward):
        return None  # TRL turns None into NaN and ignores both; keep one spelling
    if math.isinf(reward):
        raise ValueError(f"reward function {name!r} returned {reward} at index {index}; rewards must be finite")
    return reward


def score_completions(
    fns: Sequence[RewardFn],
    prompts: Sequence[Any],
    completions: Sequence[Any],
    columns: Mapping[str, Sequence[Any]],
    kwargs_per_fn: Sequence[Mapping[str, Any]],
) -> list[list[float | None]]:
    """Rewards ``[F][N]``: each of F functions on all N completions.

    Each function is called as ``fn(prompts=prompts, completions=completions, **columns,
    **kwargs_per_fn[i])``: ``columns`` holds per-completion dataset columns (and extras such as
    ``completion_ids``), ``kwargs_per_fn`` each function's own settings (``tag_style``,
    ``max_tokens``...). A function's result must be a list of N numbers or Nones; NaN becomes
    None. Timeouts and concurrency belong to the caller (the reward worker).

    >>> from grpo_ray.rewards import integer_reward, correctness_reward
    >>> score_completions(
    ...     [integer_reward, correctness_reward], ["Q"], ["<answer>\\n4\\n</answer>"], {"answer": ["4"]}, [{}, {}]
    ... )
    [[0.5], [1.0]]
    """
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(
            f"score_completions: {len(prompts)} prompts for {n} completions; repeat each prompt per completion"
        )
    if len(kwargs_per_fn) != len(fns):
        raise ValueError(f"score_completions: {len(kwargs_per_fn)} kwargs dicts for {len(fns)} reward functions")
    for col, values in columns.items():
        if isinstance(values, str) or len(values) != n:
            got = "a string" if isinstance(values, str) else f"{len(values)} values"
            raise ValueError(f"score_completions: column {col!r} has {got} for {n} completions")
    results = []
    for fn, fn_kwargs in zip(fns, kwargs_per_fn):
        name = reward_name(fn)
        clash = sorted(set(fn_kwargs) & (set(columns) | {"prompts", "completions"}))
        if clash:
            raise ValueError(
                f"reward function {name!r}: kwargs {clash} clash with dataset columns of the same "
                f"name; rename the kwarg (e.g. reference_column=...) or the column"
            )
        out = fn(prompts=prompts, completions=completions, **columns, **fn_kwargs)
        if isinstance(out, (str, bytes, Mapping)) or not hasattr(out, "__len__"):
            raise TypeError(
                f"reward function {name!r} returned {type(out).__name__}; "
                f"it must return a list with one reward per completion"
            )
        if len(out) != n:
            raise ValueError(
                f"reward function {name!r} returned {len(out)} rewards for {n} completions; return one per completion"
            )
        results.append([_to_reward(v, name, i) for i, v in enumerate(out)])
    return results
