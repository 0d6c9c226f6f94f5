"""Multi-turn rollouts with tools: the model writes, calls tools, reads their results, and goes on,
until it answers without a call or a limit ends the episode.

Token in, token out: a trajectory is the tokens the engine sampled, turn after turn, with the tokens of
each tool turn appended between them exactly as the chat template renders them
(:class:`~grpo_ray.rollout.tool_calls.ToolCallFormat`); nothing is rendered to text and tokenized
again. Tool tokens get loss mask 0 and sampling logprob 0.0, so the loss, the KL term and the
entropy count only the tokens the policy chose.

Episodes advance independently (:mod:`grpo_ray.rollout.engines.turns`): while one episode's tools
run, the engine goes on sampling the others. Each turn is sampled with a seed of its own, derived from
the prompt's seed, the episode and the turn, so an episode with deterministic tools is the same
whenever it is run again (a shard resent after its rollout worker died is redone whole).

Limits (``rollout.tools_*`` settings): ``max_turns`` assistant turns, ``max_tool_calls`` calls, the
whole trajectory within ``rollout.max_completion_tokens`` (sampled and tool tokens together), and each
tool result cut to ``tool_output_max_chars``. An episode a limit cuts off ends as truncated
(``finish_reason="length"``).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from grpo_ray.rollout.engines.turns import Turn, TurnOutput
from grpo_ray.rollout.kinds.base import KindSpec, RolloutKind
from grpo_ray.rollout.prompting import per_prompt_seeds
from grpo_ray.rollout.tool_calls import ParsedTurn, ToolCallFormat
from grpo_ray.wire import GenerationRequest, RolloutBatch

DEFAULTS = {"tools": [], "environment": None, "max_turns": 4, "max_tool_calls": 4, "tool_timeout_s": 10.0,
            "tool_output_max_chars": 1000, "tool_parser": "auto", "tool_processes": 2, "tools_prompt": None}
STAT_KEYS = ("turns", "tool_calls", "tool_errors", "tool_timeouts", "malformed_tool_calls", "model_tokens",
             "tool_tokens", "limit_hit")


def turn_seed(seed: Optional[int], episode: int, turn: int) -> Optional[int]:
    """A seed per (prompt seed, episode of the group, turn), far apart for neighbours."""
    if seed is None:
        return None
    digest = hashlib.blake2b(f"{seed}/{episode}/{turn}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


class Episode:
    """One trajectory in the making. Its state changes on the engine's thread (a turn came back) and on a
    tool thread (results came back), never both at once: a waiting episode has no turn in the engine."""

    def __init__(self, kind: "MultiTurn", key: int, prompt_ids: list[int], seed: Optional[int], budget: int,
                 prefix: str) -> None:
        self.kind, self.key, self.prompt_ids, self.seed, self.budget = kind, key, prompt_ids, seed, budget
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.logprobs: list[float] = []
        self.versions: Optional[list[int]] = None  # each token's weights version, where the engine recorded them
        self.messages: list[dict[str, Any]] = []
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.finish = "stop"
        self.prefix = prefix  # an assistant prefix the prompt ends with: part of the first reply's text

    def turn(self) -> Turn:
        return Turn(self.key, self.prompt_ids + self.ids, self.budget - len(self.ids),
                    turn_seed(self.seed, self.key, self.stats["turns"]))

    def on_turn(self, out: TurnOutput):
        """A turn came back: end the episode, or run its tools (on a tool thread) and ask for the next."""
        self.ids += out.token_ids
        self.mask += [1] * len(out.token_ids)
        self.logprobs += out.logprobs
        if out.versions is not None:
            self.versions = (self.versions or []) + out.versions
        self.stats["turns"] += 1
        self.stats["model_tokens"] += len(out.token_ids)
        fmt = self.kind.format
        ended = bool(out.token_ids) and fmt.is_end_of_turn(out.token_ids[-1])
        text = fmt.tokenizer.decode(out.token_ids[:-1] if ended else out.token_ids, skip_special_tokens=False)
        if self.stats["turns"] == 1 and self.prefix:
            text = self.prefix + text
        parsed = fmt.parse(text)
        for i, call in enumerate(parsed.calls):  # ids the same on every replay, unlike the parser's random ones
            call.id = f"call_{self.stats['turns']}_{i}"
        self.messages.append(fmt.assistant_message(parsed, text))
        self.stats["malformed_tool_calls"] += int(parsed.malformed)
        if out.finish_reason == "length" or not ended:
            self.finish = "length"
            return None
        if not parsed.calls:
            return None
        s = self.kind.settings
        if self.stats["turns"] >= s["max_turns"] or self.stats["tool_calls"] + len(parsed.calls) > s["max_tool_calls"]:
            self.finish, self.stats["limit_hit"] = "length", 1
            return None
        return self.kind.threads.submit(self._run_tools, parsed, text)

    def _run_tools(self, parsed: ParsedTurn, text: str) -> Optional[Turn]:
        limit = self.kind.settings["tool_output_max_chars"]
        results = []
        for call in parsed.calls:
            result = self.kind.toolbox.call(self.key, call.name, call.arguments)
            self.stats["tool_calls"] += 1
            self.stats["tool_errors"] += int(result.status == "error")
            self.stats["tool_timeouts"] += int(result.status == "timeout")
            content = result.content if len(result.content) <= limit else result.content[:limit] + " [... cut]"
            results.append((call.name, content))
            self.messages.append({"role": "tool", "name": call.name, "tool_call_id": call.id, "content": content})
        suffix = self.kind.format.result_ids(parsed, text, results)
        if len(self.ids) + len(suffix) >= self.budget:  # no room for the results and a reply: cut off here
            self.finish, self.stats["limit_hit"] = "length", 1
            return None
        self.ids += suffix
        self.mask += [0] * len(suffix)
        self.logprobs += [0.0] * len(suffix)
        if self.versions:  # inserted, not sampled: they follow the reply before them
            self.versions += [self.versions[-1]] * len(suffix)
        self.stats["tool_tokens"] += len(suffix)
        return self.turn()


class MultiTurn(RolloutKind):
    """``spec.options``: ``tools`` (specs), ``environment`` (a class spec or None), ``max_turns``,
    ``max_tool_calls``, ``tool_timeout_s``, ``tool_output_max_chars``, ``tool_parser``, ``tool_processes``."""

    def __init__(self, spec: KindSpec) -> None:
        from grpo_ray.tools.process import Toolbox
        from grpo_ray.tools.registry import resolve_environment, resolve_tool

        super().__init__(spec)
        self.settings = {**DEFAULTS, **spec.options}
        s = self.settings
        self.toolbox = Toolbox([resolve_tool(t) for t in s["tools"]], resolve_environment(s["environment"]),
                               timeout_s=s["tool_timeout_s"], processes=s["tool_processes"])
        self.threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="episode")
        self.format: Optional[ToolCallFormat] = None

    def rollout(self, engine, request: GenerationRequest, progress: bool = False) -> RolloutBatch:
        from grpo_ray.data.prompts import assistant_prefix

        if self.format is None or self.format.tokenizer is not engine.tokenizer:
            self.format = ToolCallFormat(engine.tokenizer, self.toolbox.schemas(), self.settings["tool_parser"],
                                         self.settings["tools_prompt"])
        s, g = request.sampling, request.sampling.n
        seeds = request.seeds or per_prompt_seeds(s.seed, len(request.prompts))
        columns = request.columns or [{} for _ in request.prompts]
        prompt_ids, episodes = [], []
        for i, (prompt, seed, row) in enumerate(zip(request.prompts, seeds, columns)):
            observations = [self.toolbox.open(i * g + j, row) for j in range(g)]
            if len(set(observations)) > 1:
                raise ValueError("the environment's reset(**row) gave the episodes of one prompt different observations; "
                                 "GRPO compares episodes of the same prompt, so reset must depend on the row alone")
            ids = self.format.encode_prompt(_with_observation(prompt, observations[0]))
            prompt_ids.append(ids)
            episodes += [Episode(self, i * g + j, ids, seed if s.temperature > 0 else None, s.max_tokens,
                                 assistant_prefix(prompt)) for j in range(g)]
        first = engine.version  # a newer one may arrive while the episodes run (in-flight updates)
        try:
            sampling_s = engine.sample_turns(s, [e.turn() for e in episodes], lambda out: episodes[out.key].on_turn(out))
        finally:
            for e in episodes:
                self.toolbox.close(e.key)
        return self._batch(prompt_ids, episodes, g, first, sampling_s)

    @staticmethod
    def _batch(prompt_ids, episodes: list[Episode], g: int, version: int, sampling_s: float) -> RolloutBatch:
        tok_texts = [e.messages[-1]["content"] if e.messages else "" for e in episodes]
        stats = {f"tools/{k}": float(sum(e.stats[k] for e in episodes)) for k in STAT_KEYS}
        return RolloutBatch(
            prompt_ids=prompt_ids, completion_ids=[e.ids for e in episodes], completion_texts=tok_texts,
            sampling_logprobs=[e.logprobs for e in episodes], finish_reasons=[e.finish for e in episodes],
            group_size=g, policy_version=version, loss_mask=[e.mask for e in episodes],
            completion_messages=[e.messages for e in episodes], episode_stats=[dict(e.stats) for e in episodes],
            token_versions=([e.versions or [version] * len(e.ids) for e in episodes]
                            if any(e.versions is not None for e in episodes) else None),
            stats={"generate_s": sampling_s, "completion_tokens": float(sum(e.stats["model_tokens"] for e in episodes)),
                   **stats},
        )

    def close(self) -> None:
        self.toolbox.shutdown()
        self.threads.shutdown(wait=False, cancel_futures=True)


def tool_format(tokenizer, options: dict[str, Any]) -> ToolCallFormat:
    """The tool-call format a multi-turn kind with ``options`` uses for ``tokenizer`` (no tool processes)."""
    from grpo_ray.tools.registry import resolve_environment, resolve_tool, tool_schema

    s = {**DEFAULTS, **options}
    schemas = [resolve_tool(t).schema for t in s["tools"]]
    env = resolve_environment(s["environment"])
    if env is not None:
        from grpo_ray.tools.registry import environment_methods

        schemas += [tool_schema(getattr(env, name), name) for name in environment_methods(env)]
    return ToolCallFormat(tokenizer, schemas, s["tool_parser"], s["tools_prompt"])


def _with_observation(prompt: list[dict[str, Any]], observation: Optional[str]) -> list[dict[str, Any]]:
    """The prompt with an environment's first observation added to its last user message."""
    if not observation:
        return prompt
    out = [dict(m) for m in prompt]
    for message in reversed(out):
        if message.get("role") == "user":
            message["content"] = f"{message.get('content') or ''}\n\n{observation}"
            break
    return out
