"""Running tools for the episodes of a rollout: built-ins on threads of the rollout worker, user tools
and environments in child processes that are killed at their timeout.

A :class:`Toolbox` holds a few tool processes (``grpo_ray.utils.isolation``, the mechanism reward
functions run in). Each episode is pinned to one of them, where its environment instance lives (an
environment keeps state between calls). A call that misses ``timeout_s`` kills its process; a fresh
one starts on the next call, and the environments it held are gone (their episodes get an error).
A tool that raises answers with its error, which goes back to the model as the tool's output.
"""

from __future__ import annotations

import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Optional

from grpo_ray.tools.registry import Tool, environment_methods
from grpo_ray.utils.isolation import IsolatedProcess, describe

_ENTRY = "grpo_ray.tools.process:tool_child"


@dataclass(frozen=True)
class ToolResult:
    content: str
    status: str = "ok"  # "ok", "error" (the tool raised, or the call was wrong) or "timeout"


class Toolbox:
    """``tools``: the resolved ``rollout.tools``; ``environment``: the ``rollout.environment`` class or None."""

    def __init__(self, tools: list[Tool], environment: Optional[type] = None, *, timeout_s: float = 10.0,
                 processes: int = 2) -> None:
        self.tools = {t.name: t for t in tools}
        self.environment = environment
        self.env_tools = environment_methods(environment) if environment is not None else []
        self.timeout_s = timeout_s
        remote = {t.name: t.fn for t in tools if not t.in_process}
        self._procs = ([IsolatedProcess(f"tools-{i}", (remote, environment), _ENTRY, kind="tool")
                        for i in range(max(1, processes))] if remote or environment is not None else [])
        self._locks = [threading.Lock() for _ in self._procs]
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tool")

    def schemas(self) -> list[dict[str, Any]]:
        from grpo_ray.tools.registry import tool_schema

        out = [t.schema for t in self.tools.values()]
        if self.environment is not None:
            out += [tool_schema(getattr(self.environment, name), name) for name in self.env_tools]
        return out

    # -- episodes ---------------------------------------------------------------------------------
    def open(self, key: int, row: dict[str, Any]) -> Optional[str]:
        """Start episode ``key``'s environment (``reset(**row)``); its observation, or None."""
        if self.environment is None:
            return None
        answer = self._remote(key, ("reset", key, row))
        if answer.status != "ok":
            raise RuntimeError(f"the environment's reset failed: {answer.content}")
        return answer.content or None

    def close(self, key: int) -> None:
        if self.environment is not None:
            self._remote(key, ("close", key))

    def call(self, key: int, name: str, arguments: dict[str, Any]) -> ToolResult:
        """One tool call of episode ``key``; never raises: what went wrong is the result."""
        if name in self.env_tools:
            return self._remote(key, ("call", key, name, arguments))
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(list(self.tools) + self.env_tools)
            return ToolResult(f"Error: there is no tool named {name!r}; the tools are: {known}", "error")
        if not tool.in_process:
            return self._remote(key, ("call", None, name, arguments))
        future = self._threads.submit(tool.fn, **arguments)
        try:
            return ToolResult(str(future.result(timeout=self.timeout_s)))
        except FutureTimeout:
            return ToolResult(f"Error: {name} took longer than {self.timeout_s:g} s", "timeout")
        except Exception as err:  # noqa: BLE001 - the model sees what it got wrong
            return ToolResult(f"Error: {type(err).__name__}: {err}", "error")

    def _remote(self, key: int, message: tuple) -> ToolResult:
        slot = key % len(self._procs)
        with self._locks[slot]:
            answer = self._procs[slot].call(pickle.dumps(message, protocol=5), self.timeout_s)
        kind = answer[0]
        if kind == "ok":
            return ToolResult("" if answer[1] is None else str(answer[1]))
        if kind == "timeout":
            return ToolResult(f"Error: the call took longer than {self.timeout_s:g} s and was stopped", "timeout")
        if kind in ("error", "failed"):
            return ToolResult(f"Error: {answer[1]}: {answer[2]}", "error")
        return ToolResult(f"Error: {answer[1] if len(answer) > 1 else kind}", "error")

    def shutdown(self) -> None:
        for proc in self._procs:
            proc.stop()
        self._threads.shutdown(wait=False, cancel_futures=True)


def tool_child(setup, receive, answer) -> None:
    """A tool process: user tools and the environments of the episodes pinned to it."""
    try:
        tools, environment = setup
    except BaseException as err:  # noqa: BLE001 - sent to the parent, which reports it
        answer("failed", *describe(err))
        return
    envs: dict[int, Any] = {}
    answer("ready", 0.0)
    while (message := receive()) is not None:
        try:
            kind, key = message[0], message[1]
            if kind == "reset":
                env = environment()
                envs[key] = env
                observation = env.reset(**message[2])
                answer("ok", None if observation is None else str(observation))
            elif kind == "close":
                env = envs.pop(key, None)
                if env is not None and callable(getattr(env, "close", None)):
                    env.close()
                answer("ok", None)
            else:
                _, key, name, arguments = message
                if key is not None:
                    if key not in envs:
                        raise RuntimeError("this episode's environment was lost when its tool process was stopped")
                    fn = getattr(envs[key], name)
                else:
                    fn = tools[name]
                result = fn(**arguments)
                answer("ok", None if result is None else str(result))
        except BaseException as err:  # noqa: BLE001 - the model sees it as the tool's output
            answer("error", *describe(err))
