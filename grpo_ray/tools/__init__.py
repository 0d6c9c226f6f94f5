"""Tools a model may call during a multi-turn rollout (``rollout.kind: multi_turn``).

registry.py    resolving ``rollout.tools`` / ``rollout.environment`` specs, and each tool's JSON schema
calculator.py  the built-in ``calculator``: exact arithmetic, no evaluation of code
sandbox.py     the built-in ``python``: a program run under namespaces and rlimits
"""

from grpo_ray.tools.registry import BUILTIN_TOOLS, Tool, ToolSpecError, resolve_environment, resolve_tool, tool_schema

__all__ = ["BUILTIN_TOOLS", "Tool", "ToolSpecError", "resolve_environment", "resolve_tool", "tool_schema"]
