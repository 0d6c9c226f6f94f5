"""Reasoning and answer as their own response fields, next to the unchanged ``content``.

A model trained by grpo_ray answers ``<reasoning>...</reasoning><answer>...</answer>``. With
``split_reasoning`` on, every chat choice's ``message`` (or, streamed, the ``delta`` of its last
chunk) and every completions choice also carries ``reasoning`` and ``answer``: the text inside each
tag pair, or null when the model did not write that pair. ``content``/``text`` stay as generated.

:class:`ReasoningFieldsMiddleware` does this to the responses of an ASGI app (vLLM's OpenAI server),
non-streamed JSON and server-sent events alike.
"""

from __future__ import annotations

from typing import Any, Optional

from grpo_ray.rewards.parsing import extract_reasoning, resolve_tag_style
from grpo_ray.serve.asgi import ChunkRewriter, rewriting_send

ROUTES = {b"/v1/chat/completions": "chat", b"/v1/completions": "text"}


def split_reasoning(text: str, tag_style: str = "reasoning") -> dict[str, Optional[str]]:
    style = resolve_tag_style(tag_style)
    answer = None
    start = text.rfind(style.answer_open)
    if start >= 0:
        rest = text[start + len(style.answer_open):]
        end = rest.find(style.answer_close)
        answer = (rest if end < 0 else rest[:end]).strip()
    return {"reasoning": extract_reasoning(text, style), "answer": answer}


def _choice_text(choice: dict[str, Any], kind: str, *, streamed: bool) -> str:
    if kind == "text":
        return choice.get("text") or ""
    part = choice.get("delta" if streamed else "message") or {}
    return part.get("content") or ""


def annotate_json(payload: dict[str, Any], kind: str, tag_style: str) -> dict[str, Any]:
    for choice in payload.get("choices") or []:
        fields = split_reasoning(_choice_text(choice, kind, streamed=False), tag_style)
        (choice.setdefault("message", {}) if kind == "chat" else choice).update(fields)
    return payload


class StreamAnnotator(ChunkRewriter):
    """Server-sent events in, the same events out; the chunk that finishes a choice gains its fields."""

    def __init__(self, kind: str, tag_style: str) -> None:
        super().__init__()
        self.kind, self.tag_style = kind, tag_style
        self.texts: dict[int, str] = {}

    def rewrite(self, chunk: dict[str, Any]) -> bool:
        changed = False
        for choice in chunk.get("choices") or []:
            i = int(choice.get("index", 0))
            self.texts[i] = self.texts.get(i, "") + _choice_text(choice, self.kind, streamed=True)
            if choice.get("finish_reason") is not None:
                fields = split_reasoning(self.texts[i], self.tag_style)
                (choice.setdefault("delta", {}) if self.kind == "chat" else choice).update(fields)
                changed = True
        return changed


class ReasoningFieldsMiddleware:
    """ASGI middleware adding ``reasoning``/``answer`` to successful completion responses."""

    def __init__(self, app, tag_style: str = "reasoning") -> None:
        self.app, self.tag_style = app, tag_style

    async def __call__(self, scope, receive, send):
        kind = ROUTES.get(scope.get("path", "").encode()) if scope.get("type") == "http" else None
        if kind is None or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        wrapped_send = rewriting_send(send, lambda: StreamAnnotator(kind, self.tag_style),
                                      lambda payload: annotate_json(payload, kind, self.tag_style))
        return await self.app(scope, receive, wrapped_send)
