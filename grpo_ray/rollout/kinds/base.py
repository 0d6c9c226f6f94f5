"""The rollout-kind interface: how a prompt becomes a trajectory.

A rollout kind drives an engine (``grpo_ray.rollout.engines``) to turn each prompt of a
:class:`~grpo_ray.wire.GenerationRequest` into G trajectories and returns them as a
:class:`~grpo_ray.wire.RolloutBatch`: the token ids after the prompt exactly as they were sampled, their
sampling logprobs, a loss mask (0 on tokens the policy did not choose, such as a tool's output) and the
conversation the trajectory forms, which reward functions receive. Single-turn generation is one kind;
a multi-turn kind with tools is another, with the same engines underneath.

A kind knows nothing of Ray: the rollout actor, ``grpo-ray eval`` / ``generate`` and the tests hold one
the same way. Adding a kind is one class registered by import path in :data:`ROLLOUT_KINDS` and its
name in the config's ``RolloutKindName`` Literal (kept equal by ``tests/unit/test_config_names.py``); its
settings arrive as a :class:`KindSpec`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grpo_ray.utils.registry import Registry

if TYPE_CHECKING:
    from grpo_ray.config import GRPOConfig
    from grpo_ray.rollout.engines.base import RolloutEngine
    from grpo_ray.wire import GenerationRequest, RolloutBatch


@dataclass(frozen=True)
class KindSpec:
    """A rollout kind by name, with its settings (plain data: it travels to the rollout actors)."""

    name: str = "single_turn"
    options: dict[str, Any] = field(default_factory=dict)


class RolloutKind(ABC):
    def __init__(self, spec: KindSpec) -> None:
        self.spec = spec

    @abstractmethod
    def rollout(self, engine: "RolloutEngine", request: "GenerationRequest", progress: bool = False) -> "RolloutBatch":
        """``request.sampling.n`` trajectories for each prompt of ``request``, group by group (``progress``:
        show a progress bar, for long evaluations)."""

    def close(self) -> None:
        """Release what the kind holds (tool processes, environments)."""


# name -> "module:Class", imported only when chosen
ROLLOUT_KINDS: Registry[str] = Registry("rollout kind")
ROLLOUT_KINDS.register("single_turn")("grpo_ray.rollout.kinds.single_turn:SingleTurn")
ROLLOUT_KINDS.register("multi_turn")("grpo_ray.rollout.kinds.multi_turn:MultiTurn")


def prompt_encoder(spec: KindSpec, tokenizer):
    """``messages -> token ids`` as the kind renders a prompt (a multi-turn kind adds its tools), for
    measuring prompts against ``data.max_prompt_tokens`` and the engine's context."""
    if spec.name == "multi_turn":
        from grpo_ray.rollout.kinds.multi_turn import tool_format

        return tool_format(tokenizer, spec.options).encode_prompt
    from grpo_ray.rollout.prompting import encode_prompts

    return lambda messages: encode_prompts(tokenizer, [messages])[0]


def create_rollout_kind(spec: KindSpec) -> RolloutKind:
    module, _, attr = ROLLOUT_KINDS.get(spec.name).partition(":")
    return getattr(importlib.import_module(module), attr)(spec)


# the rollout settings a multi-turn kind takes, by name
MULTI_TURN_KEYS = ("tools", "environment", "max_turns", "max_tool_calls", "tool_timeout_s", "tool_output_max_chars",
                   "tool_parser", "tool_processes", "tools_prompt")


def kind_spec(cfg: "GRPOConfig") -> KindSpec:
    """The rollout kind of a training run, from its config."""
    r = cfg.rollout
    if r.kind == "multi_turn":
        return KindSpec(r.kind, {key: getattr(r, key) for key in MULTI_TURN_KEYS})
    return KindSpec(r.kind)
