"""Rewards about tool use in multi-turn rollouts, read from the columns those rollouts add
(``tool_calls``, ``malformed_tool_calls``, ``tool_errors``, ``tool_timeouts``: counts per episode)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from grpo_ray.rewards.registry import REWARDS


@REWARDS.register("tool_call_format", in_process=True)
def tool_call_format_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    tool_calls: Optional[Sequence[int]] = None,
    malformed_tool_calls: Optional[Sequence[int]] = None,
    tool_errors: Optional[Sequence[int]] = None,
    **kwargs: Any,
) -> list[Optional[float]]:
    """0.5 for an episode whose tool calls could all be read and ran, -0.25 for one that wrote a call that
    could not be read, 0 otherwise (no call, or a call the tool refused); None outside multi-turn rollouts.
    For recipes whose model must first learn the call format.

    >>> tool_call_format_reward(["q"] * 4, ["c"] * 4, tool_calls=[1, 0, 2, 1], malformed_tool_calls=[0, 0, 1, 0],
    ...                         tool_errors=[0, 0, 0, 1])
    [0.5, 0.0, -0.25, 0.0]
    """
    if tool_calls is None:
        return [None] * len(completions)
    malformed = malformed_tool_calls or [0] * len(completions)
    errors = tool_errors or [0] * len(completions)
    out: list[Optional[float]] = []
    for calls, bad, failed in zip(tool_calls, malformed, errors):
        if bad:
            out.append(-0.25)
        elif calls and not failed:
            out.append(0.5)
        else:
            out.append(0.0)
    return out


@REWARDS.register("tool_called", in_process=True)
def tool_called_reward(
    prompts: Sequence[Any], completions: Sequence[Any], tool_calls: Optional[Sequence[int]] = None, **kwargs: Any,
) -> list[Optional[float]]:
    """1 for an episode that called a tool, 0 for one that did not; None outside multi-turn rollouts. The
    eval table's tool-call rate is its mean.

    >>> tool_called_reward(["q"] * 3, ["c"] * 3, tool_calls=[2, 0, 1]), tool_called_reward(["q"], ["c"])
    ([1.0, 0.0, 1.0], [None])
    """
    if tool_calls is None:
        return [None] * len(completions)
    return [1.0 if calls else 0.0 for calls in tool_calls]
