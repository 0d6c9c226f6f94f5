"""Finding tools by name, and the JSON schema the model is shown for each.

A tool spec in ``rollout.tools`` is resolved like a reward spec (``grpo_ray.rewards.registry``):

- a built-in name: ``calculator`` (exact arithmetic), ``python`` (a sandboxed program);
- ``"package.module:function"`` or ``"path/to/file.py:function"``: a plain Python function whose schema
  comes from its type hints and its Google-style docstring, as TRL's and transformers' tools do
  (``transformers.utils.get_json_schema``): a description, and an ``Args:`` line for every parameter.

A stateful environment (``rollout.environment: "my_env.py:MyEnv"``) is a class: one instance per
episode, ``reset(**row)`` at its start (a returned string is added to the question), and every public
method but ``reset`` is a tool of that episode, as in TRL's ``environment_factory``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

from grpo_ray.utils.registry import Registry

# name -> "module:function"; ``in_process``: pure and quick (or confined by itself), so it runs on a
# thread of the rollout worker instead of in a killable tool process
BUILTIN_TOOLS: Registry[str] = Registry("tool")
BUILTIN_TOOLS.register("calculator")("grpo_ray.tools.calculator:calculator")
BUILTIN_TOOLS.register("python")("grpo_ray.tools.sandbox:python")
IN_PROCESS = {"calculator", "python"}  # python confines its code in a sandbox process of its own


class ToolSpecError(ValueError):
    """A tool or environment spec names nothing usable; ``str()`` is one line saying what to change."""


@dataclass(frozen=True)
class Tool:
    """A resolved tool: its function, the JSON schema the model sees, and where it runs."""

    name: str
    fn: Callable[..., Any]
    schema: dict[str, Any]
    in_process: bool


def resolve_tool(spec: str) -> Tool:
    """The tool a spec names (see the module docstring), its schema checked."""
    from grpo_ray.rewards.registry import RewardSpecError, resolve_reward

    if not isinstance(spec, str) or not spec.strip():
        raise ToolSpecError(f"tool spec {spec!r} is empty; give a built-in ({', '.join(BUILTIN_TOOLS)}), "
                            "'module:function' or 'path/to/file.py:function'")
    spec = spec.strip()
    if ":" not in spec:
        if spec not in BUILTIN_TOOLS:
            raise ToolSpecError(f"{BUILTIN_TOOLS.unknown_message(spec)}; or give 'module:function' or 'path/to/file.py:function'")
        fn = resolve_reward(BUILTIN_TOOLS.get(spec))
        return Tool(spec, fn, tool_schema(fn, spec), spec in IN_PROCESS)
    try:
        fn = resolve_reward(spec)  # the same loader: module:function or file.py:function
    except RewardSpecError as err:
        raise ToolSpecError(str(err).replace("reward spec", "tool spec")) from None
    if inspect.isclass(fn):
        raise ToolSpecError(f"tool spec {spec!r} is a class; give a function, or set rollout.environment to the class")
    return Tool(fn.__name__, fn, tool_schema(fn, spec), False)


def tool_schema(fn: Callable[..., Any], spec: str) -> dict[str, Any]:
    """``fn``'s JSON schema, or a one-line :class:`ToolSpecError` saying what its docstring or hints lack."""
    from transformers.utils import get_json_schema
    from transformers.utils.chat_template_utils import DocstringParsingException, TypeHintParsingException

    try:
        return get_json_schema(fn)
    except (DocstringParsingException, TypeHintParsingException) as err:
        raise ToolSpecError(f"tool {spec!r}: {err}; a tool needs a docstring with a description, an 'Args:' line for "
                            "every parameter, and a type hint on each") from None


def resolve_environment(spec: Optional[str]) -> Optional[type]:
    """The environment class a spec names, checked to have ``reset`` and at least one tool method."""
    if spec is None:
        return None
    from grpo_ray.rewards.registry import RewardSpecError, resolve_reward

    try:
        cls = resolve_reward(spec)
    except RewardSpecError as err:
        raise ToolSpecError(str(err).replace("reward spec", "environment spec")) from None
    if not inspect.isclass(cls):
        raise ToolSpecError(f"environment spec {spec!r} is not a class; give the class whose instances are episodes")
    if not callable(getattr(cls, "reset", None)):
        raise ToolSpecError(f"environment {spec!r} has no reset(**row) method; add one (it may return a string to show "
                            "the model)")
    if not environment_methods(cls):
        raise ToolSpecError(f"environment {spec!r} has no public method besides reset: its methods are the tools")
    for name in environment_methods(cls):
        tool_schema(getattr(cls, name), f"{spec}.{name}")
    return cls


def environment_methods(cls: type) -> list[str]:
    """The public methods of an environment class that are its tools."""
    return sorted(name for name, member in inspect.getmembers(cls, inspect.isfunction)
                  if not name.startswith("_") and name not in ("reset", "get_reward", "close"))
