"""Finding reward functions by name, and calling a list of them on one batch.

A reward spec in the config is one of:

- a built-in name: ``"correctness"`` (see ``REWARDS.names()``);
- ``"package.module:function"``, importable from the worker's ``sys.path``;
- ``"path/to/file.py:function"``, relative to the working directory or absolute.

Every function follows TRL's convention, ``fn(prompts, completions, **kwargs) -> list[float |
None]`` with dataset columns as kwargs, so a reward written for TRL works here unchanged. A function
may also carry ``fn.warmup(**settings)``, which the reward worker calls once per process before the
first timed call (a model load is then not counted against ``reward.timeout_s``).

Built-ins are registered with :class:`RewardTraits` saying where they may run: pure, fast ones on a
thread of the reward worker, the rest (and all user code) in a process the worker can kill.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

from grpo_ray.utils.registry import Registry

RewardFn = Callable[..., Sequence[Any]]


@dataclass(frozen=True)
class RewardTraits:
    """What the reward worker may assume about a registered function.

    Attributes:
        in_process: pure, fast and trusted: under ``reward.isolation=auto`` it runs on a thread of
            the reward worker instead of in a killable process (a process costs a pickle round trip
            per batch, which is most of the time of a regex over 64 completions).
        judge: scores through the run's ``JudgeWorker`` actor, whose handle the cluster passes as
            ``judge=``; it always runs in the worker (a child process holds no Ray connection) and
            only waits there.
    """

    in_process: bool = False
    judge: bool = False


class RewardRegistry(Registry[RewardFn]):
    """The reward-function registry: names, plus each entry's :class:`RewardTraits`."""

    def __init__(self) -> None:
        super().__init__("reward function")
        self._traits: dict[str, RewardTraits] = {}

    def register(self, name: str, *, in_process: bool = False, judge: bool = False) -> Callable[[RewardFn], RewardFn]:
        add = super().register(name)

        def add_with_traits(fn: RewardFn) -> RewardFn:
            self._traits[name] = RewardTraits(in_process=in_process, judge=judge)
            return add(fn)

        return add_with_traits

    def traits(self, spec: str | RewardFn) -> RewardTraits:
        """The traits of a built-in, by name or by the function itself; user code has none.

        >>> REWARDS.traits("correctness").in_process, REWARDS.traits(lambda p, c: [0.0] * len(c)).in_process
        (True, False)
        """
        if isinstance(spec, str):
            return self._traits.get(spec, RewardTraits())
        for name, traits in self._traits.items():
            if self.get(name) is spec:
                return traits
        return RewardTraits()


REWARDS = RewardRegistry()


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


def display_name(spec: str) -> str:
    """A metric-friendly name for a reward spec: no slashes, no folders.

    Built-in names stay; ``path/to/file.py:fn`` becomes ``file.fn`` and ``package.module:fn``
    ``module.fn``, so metric keys read ``rewards/file.fn/mean`` and a dashboard can group them.

    >>> display_name("correctness"), display_name("/home/user/my_rewards.py:brevity")
    ('correctness', 'my_rewards.brevity')
    >>> display_name("grpo_ray.rewards.formatting:xml_count_reward"), display_name(r"C:\\r\\my rewards.py:f")
    ('formatting.xml_count_reward', 'my_rewards.f')
    """
    spec = spec.strip()
    if ":" in spec:
        where, _, attr = spec.rpartition(":")
        where = where.replace("\\", "/").rstrip("/")
        stem = where.rsplit("/", 1)[-1]
        stem = stem[: -len(".py")] if stem.endswith(".py") else stem.rsplit(".", 1)[-1]
        spec = f"{stem}.{attr}" if stem else attr
    return re.sub(r"[\s/\\:]+", "_", spec) or "reward"


def reward_name(fn: RewardFn) -> str:
    """A readable name for a reward function (partials and callable objects included)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", None) or type(fn).__name__


def accepts_kwarg(fn: Callable[..., Any], kwarg: str) -> bool:
    """Whether ``fn`` takes ``kwarg`` by name (or has ``**kwargs``); True when it has no signature.

    >>> accepts_kwarg(lambda prompts, completions, **kw: [], "tag_style"), accepts_kwarg(lambda x: x, "tag_style")
    (True, False)
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature: assume yes
        return True
    return any(p.name == kwarg or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def warmup_of(fn: RewardFn) -> Callable[..., Any] | None:
    """``fn.warmup`` if it has one (a partial keeps its function's), else None."""
    warm, inner = getattr(fn, "warmup", None), fn
    while warm is None and isinstance(inner, functools.partial):
        inner = inner.func
        warm = getattr(inner, "warmup", None)
    if warm is not None and not callable(warm):
        raise TypeError(f"reward function {reward_name(fn)!r}: its warmup attribute is a {type(warm).__name__}, not callable")
    return warm


def warm_up(fn: RewardFn, settings: Mapping[str, Any]) -> bool:
    """Call ``fn.warmup`` (if it has one) with the settings it accepts; True if it had one.

    ``settings`` are the function's own keyword arguments (its ``kwargs`` in the config and
    ``tag_style``), never dataset columns: a warm-up loads what every batch will need (a model, a
    tokenizer, a connection), once per process, before the first timed call.

    >>> def reward(prompts, completions, model="m", **kw):
    ...     return [0.0] * len(completions)
    >>> reward.warmup = lambda model="m": print("loading", model)
    >>> warm_up(reward, {"model": "tiny", "tag_style": "reasoning"})
    loading tiny
    True
    """
    warm = warmup_of(fn)
    if warm is None:
        return False
    warm(**{k: v for k, v in settings.items() if accepts_kwarg(warm, k)})
    return True


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
