"""Chat requests to a tuned model, asked the way its training run asked.

A model trained with a system prompt, worked demonstrations or an assistant prefix (``data.*`` of
the run's ``config.yaml``, read by :func:`grpo_ray.models.run_prompt.run_prompt`) answers a bare
question as if untrained. For each served name whose run is known, :class:`RunPromptMiddleware`
rewrites a ``/v1/chat/completions`` request as :meth:`PromptRecipe.messages` would have built it:

1. the run's system prompt first, unless the request has a system (or developer) message;
2. the demonstration turns right after the leading system messages;
3. the assistant prefix as a final assistant message, continued by vLLM
   (``continue_final_message: true, add_generation_prompt: false``), unless the request already
   ends with an assistant message or sets either field itself. vLLM returns only what follows the
   prefix, so the prefix is put back in front of each choice's content (non-streamed:
   ``message.content``; streamed: the first content delta of each choice), and clients and the
   reasoning/answer fields see the whole reply. With ``echo`` vLLM repeats it itself.

``/v1/completions`` takes raw text and is left alone. No Ray or vLLM import here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from grpo_ray.data.prompts import PromptRecipe, demonstration_turns
from grpo_ray.serve.asgi import ChunkRewriter, json_object, read_body, replay_body, rewriting_send

ROUTE = "/v1/chat/completions"
SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class ServedPrompt:
    """The prompt recipe requests to the served name ``model`` get, from the run at ``source``."""

    model: str
    recipe: PromptRecipe
    source: str  # the run's config.yaml
    tools: tuple[str, ...] = ()  # the run's tools (rollout.kind=multi_turn)
    max_turns: int = 4  # the run's rollout.max_turns

    def describe(self) -> str:
        r = self.recipe
        parts = [f"system prompt ({len(r.system_prompt)} chars)" if r.system_prompt else "no system prompt"]
        if r.demonstrations:
            parts.append(f"{len(r.demonstrations)} demonstration(s)")
        if r.assistant_prefix:
            parts.append(f"assistant prefix {r.assistant_prefix!r}")
        return f"{self.model} <- {self.source}: {', '.join(parts)}"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ServedPrompt":
        r = raw["recipe"]
        recipe = PromptRecipe(r["system_prompt"], tuple(_demo_tuple(d) for d in r["demonstrations"]), r["assistant_prefix"])
        return cls(raw["model"], recipe, raw["source"], tuple(raw.get("tools", ())), int(raw.get("max_turns", 4)))


def _demo_tuple(demo) -> tuple:
    """A demonstration back from JSON: (question, reply[, ((tool, arguments, result), ...)])."""
    if len(demo) > 2:
        return (demo[0], demo[1], tuple(tuple(call) for call in demo[2]))
    return tuple(demo)


def find_served_prompts(models: dict[str, str]) -> tuple[ServedPrompt, ...]:
    """A :class:`ServedPrompt` for each served name in ``models`` (name -> local folder of the model
    or adapter) whose training run's ``config.yaml`` is found beside it."""
    from grpo_ray.models.run_prompt import run_prompt

    out = []
    for name, path in models.items():
        found = run_prompt(path)
        if found is not None:
            options = found.kind.options if found.kind is not None else {}
            out.append(ServedPrompt(name, found.recipe(_instruction(found.source)), str(found.source),
                                    tuple(options.get("tools", ())), int(options.get("max_turns", 4))))
    return tuple(out)


def _instruction(config_path: Optional[str]) -> str:
    """The instruction line a built-in dataset adds to the default system prompt (PubMedQA's), as
    the training run's data loader added it."""
    from grpo_ray.config import read_yaml
    from grpo_ray.data.loader import DATASETS  # the loader's import registers the built-ins

    source = (read_yaml(config_path).get("data") or {}).get("source") if config_path else None
    return DATASETS.get(source).instruction if isinstance(source, str) and source in DATASETS else ""


def apply_recipe(payload: dict[str, Any], recipe: PromptRecipe) -> tuple[dict[str, Any], str]:
    """``payload`` (a chat request) with ``recipe``'s system prompt, demonstrations and assistant
    prefix added where the client left them out, and the text to put before each reply ("" for none).

    >>> body, prefix = apply_recipe({"messages": [{"role": "user", "content": "2+2?"}]},
    ...                             PromptRecipe("S", (("1+1?", "2"),), "<r>"))
    >>> [m["content"] for m in body["messages"]], prefix, body["continue_final_message"]
    (['S', '1+1?', '2', '2+2?', '<r>'], '<r>', True)
    """
    messages = list(payload["messages"])
    last = messages[-1] if messages else None
    ends_with_assistant = isinstance(last, dict) and last.get("role") == "assistant"  # the client's own prefix
    has_system = any(isinstance(m, dict) and m.get("role") in SYSTEM_ROLES for m in messages)
    if recipe.system_prompt and not has_system:
        messages.insert(0, {"role": "system", "content": recipe.system_prompt})
    at = next((i for i, m in enumerate(messages) if not (isinstance(m, dict) and m.get("role") in SYSTEM_ROLES)),
              len(messages))
    shots = [turn for demo in recipe.demonstrations for turn in demonstration_turns(demo)]
    messages[at:at] = shots
    out, prefix = {**payload, "messages": messages}, ""
    sets_it_itself = "continue_final_message" in payload or "add_generation_prompt" in payload
    # the prefix opens the reply to a question: not a turn after tool results (the model goes on from them)
    answers_a_question = isinstance(last, dict) and last.get("role") == "user"
    if recipe.assistant_prefix and answers_a_question and not ends_with_assistant and not sets_it_itself:
        messages.append({"role": "assistant", "content": recipe.assistant_prefix})
        out.update(continue_final_message=True, add_generation_prompt=False)
        prefix = "" if payload.get("echo") else recipe.assistant_prefix  # vLLM's echo repeats it
    return out, prefix


def prefix_json(payload: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A chat completion with ``prefix`` before each choice's content (not for the server's own tool loop,
    whose reply is its last turn and whose transcript holds the prefix already)."""
    if "transcript" in payload:
        return payload
    for choice in payload.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"] = prefix + message["content"]
    return payload


class PrefixStream(ChunkRewriter):
    """Server-sent chat chunks in, the same out, with ``prefix`` before each choice's first content delta."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.done = prefix, set()

    def rewrite(self, chunk: dict[str, Any]) -> bool:
        changed = False
        for choice in chunk.get("choices") or []:
            delta, i = choice.get("delta") or {}, choice.get("index", 0)
            if i not in self.done and isinstance(delta.get("content"), str):
                delta["content"] = self.prefix + delta["content"]
                self.done.add(i)
                changed = True
        return changed


class RunPromptMiddleware:
    """ASGI middleware: chat requests to a name in ``prompts`` (served name -> recipe) are rewritten
    by :func:`apply_recipe`, and their replies get the assistant prefix back in front."""

    def __init__(self, app, prompts: dict[str, PromptRecipe]) -> None:
        self.app, self.prompts = app, prompts

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or scope.get("method") != "POST" or scope.get("path") != ROUTE:
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:  # the client left
            return
        payload = json_object(body)
        recipe = self.prompts.get(payload.get("model")) if isinstance(payload, dict) else None
        prefix = ""
        if recipe is not None and isinstance(payload.get("messages"), list):
            payload, prefix = apply_recipe(payload, recipe)
            body = json.dumps(payload).encode()
            headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"content-length"]
            scope = {**scope, "headers": headers + [(b"content-length", str(len(body)).encode())]}
        replay = replay_body(body, receive)
        return await self.app(scope, replay, _prefixing_send(send, prefix) if prefix else send)


def _prefixing_send(send, prefix: str):
    return rewriting_send(send, lambda: PrefixStream(prefix), lambda payload: prefix_json(payload, prefix))
