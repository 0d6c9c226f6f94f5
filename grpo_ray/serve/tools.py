"""Tool calls through ``grpo-ray serve``: OpenAI's tool protocol, and the run's own tools run by the server.

OpenAI's protocol: a chat request carries ``tools``; the reply's message carries ``tool_calls``
(``finish_reason: "tool_calls"``), the client runs them and sends their results back as ``tool``
messages. vLLM's server does this itself for models whose chat template renders tools, with the
parser ``grpo-ray serve`` names (``--tool-call-parser``). This middleware fills what is left, for each
served name:

- a template with no tools (SmolLM2): the tools are described at the end of the system message in the
  Hermes format, as in training (:class:`~grpo_ray.rollout.tool_calls.ToolCallFormat`), and earlier
  assistant turns' ``tool_calls`` are written back as the text the model wrote;
- a reply whose call vLLM's parser could not see (it began in the run's assistant prefix, which the
  run-prompt layer put in the request) is parsed here, the prefix included, into ``tool_calls``;
- ``--run-tools``: a request to a model trained with built-in tools (calculator, python) and with
  ``tools`` of its own left out is answered by the server running those tools, turn after turn as in
  training, up to the run's ``max_turns``. The reply is the last turn's, with ``transcript``: every
  message of the episode (the calls and their results). Streaming is refused there: the server needs
  each whole turn.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Optional

from grpo_ray.serve.asgi import json_object, read_body, replay_body

log = logging.getLogger("grpo_ray.serve.tools")
ROUTE = "/v1/chat/completions"


@dataclass(frozen=True)
class ServedTools:
    """How one served name takes tools: ``native`` when its template renders them; ``run_tools``: the
    built-in tools the server runs itself (``--run-tools``), with the run's ``max_turns``."""

    model: str
    native: bool
    run_tools: tuple[str, ...] = ()
    max_turns: int = 4


def served_tools(o) -> dict[str, ServedTools]:
    """Each served name's :class:`ServedTools` for ``o`` (:class:`~grpo_ray.serve.options.ServeOptions`)."""
    from transformers import AutoTokenizer

    from grpo_ray.rollout.tool_calls import template_supports_tools

    native = template_supports_tools(AutoTokenizer.from_pretrained(o.model))
    runs = {p.model: p for p in o.prompts}
    out = {}
    for name in o.served_names():
        run = runs.get(name)
        tools = tuple(run.tools) if (o.run_tools and run is not None) else ()
        out[name] = ServedTools(name, native, tools, run.max_turns if run is not None else 4)
    return out


class ToolsMiddleware:
    """ASGI middleware for chat requests; see the module docstring. ``tokenizer_path``: the base model's."""

    def __init__(self, app, served: dict[str, ServedTools], tokenizer_path: str, parser: str) -> None:
        self.app, self.served, self.tokenizer_path, self.parser = app, served, tokenizer_path, parser
        self._formats: dict[tuple, Any] = {}
        self._toolboxes: dict[str, Any] = {}

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or scope.get("method") != "POST" or scope.get("path") != ROUTE:
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:
            return
        payload = json_object(body)
        served = self.served.get(payload.get("model")) if payload is not None else None
        if served is None or not isinstance(payload.get("messages"), list):
            return await self.app(scope, replay_body(body, receive), send)
        if served.run_tools and not payload.get("tools"):
            if payload.get("stream"):
                return await _send_json(send, 400, _error("the server runs this model's tools only for whole replies; "
                                                          "set stream to false, or pass tools of your own", "stream"))
            return await self._run_tools(scope, receive, send, payload, served)
        if not payload.get("tools") or payload.get("stream"):
            return await self.app(scope, replay_body(body, receive), send)
        fmt = self._format([t for t in payload["tools"] if isinstance(t, dict)])
        request = {**payload, "messages": self._prompt_messages(payload["messages"], fmt, served)}
        status, reply = await _call(self.app, scope, receive, request)
        if status == 200 and isinstance(reply, dict):
            reply = _with_parsed_calls(reply, fmt, _open_prefix(payload))
        return await _send_json(send, status, reply)

    # -- the server's own tool loop ---------------------------------------------------------------
    async def _run_tools(self, scope, receive, send, payload: dict[str, Any], served: ServedTools):
        """Turn after turn: the first continues the run's assistant prefix (as in training), later ones
        follow the tool results; the reply is the last turn's, with the whole episode as ``transcript``."""
        import asyncio

        box = self._toolbox(served)
        fmt = self._format(box.schemas())
        prefix = _open_prefix(payload)
        messages = list(payload["messages"][:-1] if prefix else payload["messages"])
        transcript: list[dict[str, Any]] = []
        for turn in range(served.max_turns):
            body = {**payload, "n": 1, "messages": self._prompt_messages(messages, fmt, served)}
            if served.native:  # the template renders the tools itself
                body["tools"] = box.schemas()
            if turn == 0 and prefix:
                body["messages"].append(payload["messages"][-1])
            elif turn:
                body.update(add_generation_prompt=True, continue_final_message=False)
            status, reply = await _call(self.app, scope, receive, body)
            if status != 200 or not isinstance(reply, dict):
                return await _send_json(send, status, reply)
            text = (prefix if turn == 0 else "") + (reply["choices"][0]["message"].get("content") or "")
            reply = _with_parsed_calls(reply, fmt, prefix if turn == 0 else "")
            message = reply["choices"][0]["message"]
            calls = message.get("tool_calls") or []
            transcript.append({"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})})
            if not calls or turn == served.max_turns - 1:
                message["content"] = text if not calls else message.get("content")
                reply["transcript"] = transcript
                return await _send_json(send, 200, reply)
            messages.append(transcript[-1])
            for call in calls:
                name, arguments = call["function"]["name"], _arguments(call["function"].get("arguments"))
                result = await asyncio.to_thread(box.call, 0, name, arguments)
                tool_message = {"role": "tool", "tool_call_id": call.get("id", ""), "name": name, "content": result.content}
                messages.append(tool_message)
                transcript.append(tool_message)

    def _toolbox(self, served: ServedTools):
        if served.model not in self._toolboxes:
            from grpo_ray.tools.process import Toolbox
            from grpo_ray.tools.registry import resolve_tool

            self._toolboxes[served.model] = Toolbox([resolve_tool(t) for t in served.run_tools])
        return self._toolboxes[served.model]

    # -- formats ------------------------------------------------------------------------------------
    def _format(self, schemas: list[dict[str, Any]]):
        key = json.dumps(schemas, sort_keys=True)
        if key not in self._formats:
            from transformers import AutoTokenizer

            from grpo_ray.rollout.tool_calls import ToolCallFormat

            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
            self._formats[key] = ToolCallFormat(tokenizer, schemas, self.parser)
        return self._formats[key]

    @staticmethod
    def _prompt_messages(messages: list[Any], fmt, served: ServedTools) -> list[Any]:
        """Messages as the served model's template takes them: with no tools in the template, the tools
        described in the system message and earlier calls written back as the text the model wrote."""
        if served.native:
            return list(messages)
        out = []
        for m in messages:
            if isinstance(m, dict) and m.get("role") == "assistant" and m.get("tool_calls") and "<tool_call>" in str(m.get("content") or ""):
                m = {"role": "assistant", "content": m["content"]}  # already the text the model wrote
            elif isinstance(m, dict) and m.get("role") == "assistant" and m.get("tool_calls"):
                text = "".join(f'<tool_call>\n{json.dumps({"name": c["function"]["name"], "arguments": _arguments(c["function"].get("arguments"))})}\n</tool_call>'
                               for c in m["tool_calls"] if isinstance(c, dict) and isinstance(c.get("function"), dict))
                m = {"role": "assistant", "content": (m.get("content") or "") + text}
            elif isinstance(m, dict) and m.get("role") == "tool":
                m = {"role": "tool", "content": str(m.get("content") or "")}
            out.append(m)
        return fmt.prompt_messages(out)


def _open_prefix(payload: dict[str, Any]) -> str:
    """The assistant prefix a request ends with (the run's recipe continues it), or ""."""
    messages = payload.get("messages") or []
    last = messages[-1] if messages else None
    if payload.get("continue_final_message") and isinstance(last, dict) and last.get("role") == "assistant":
        return str(last.get("content") or "")
    return ""


def _with_parsed_calls(reply: dict[str, Any], fmt, prefix: str = "") -> dict[str, Any]:
    """The reply with ``tool_calls`` read from each choice's text (after ``prefix``, where the call may
    have begun) where vLLM found none."""
    for choice in reply.get("choices") or []:
        message = choice.get("message") or {}
        if message.get("tool_calls") or not isinstance(message.get("content"), str):
            continue
        turn = fmt.parse(prefix + message["content"])
        if turn.calls:
            message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                      "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                                     for i, c in enumerate(turn.calls)]
            message["content"] = turn.content or None
            choice["finish_reason"] = "tool_calls"
    return reply


def _arguments(raw: Any) -> dict[str, Any]:
    """OpenAI sends arguments as a JSON string; a dict passes as it is."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


async def _call(app, scope, receive, payload: dict[str, Any]) -> tuple[int, Any]:
    """Run ``app`` on ``payload`` (a JSON request to the same route); its status and JSON reply."""
    body = json.dumps(payload).encode()
    headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"content-length"]
    scope = {**scope, "headers": headers + [(b"content-length", str(len(body)).encode())]}
    sent: dict[str, Any] = {"status": 500, "body": b""}

    async def capture(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    await app(scope, replay_body(body, receive), capture)
    try:
        return sent["status"], json.loads(sent["body"])
    except ValueError:
        return sent["status"], {"error": {"message": sent["body"].decode(errors="replace")[:500], "type": "server_error",
                                          "param": None, "code": sent["status"]}}


async def _send_json(send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _error(message: str, param: Optional[str]) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": 400}}
