"""The ASGI pieces the serve middlewares share: a request body replayed to the app after the
middleware read it, and a successful completion response rewritten on its way out.

A streamed OpenAI response is ``data: {json}`` events separated by blank lines, split across body
messages at arbitrary bytes. :class:`ChunkRewriter` reassembles whole events, hands each JSON chunk
to :meth:`ChunkRewriter.rewrite`, and passes through unchanged what it does not touch (the final
``data: [DONE]``, comments, anything that is not JSON). A JSON response is held until its last byte,
rewritten, and sent with its new length (:func:`rewriting_send`).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional


class ChunkRewriter:
    def __init__(self) -> None:
        self.pending = b""

    def rewrite(self, chunk: dict[str, Any]) -> bool:
        """Edit ``chunk`` in place; return whether it changed."""
        raise NotImplementedError

    def feed(self, data: bytes, *, last: bool = False) -> bytes:
        """The whole events that ``data`` completes, rewritten; with ``last``, the rest too."""
        self.pending += data
        *events, self.pending = self.pending.split(b"\n\n")
        out = b"".join(self._event(e) + b"\n\n" for e in events)
        if last and self.pending:
            out, self.pending = out + self._event(self.pending), b""
        return out

    def flush(self) -> bytes:
        return self.feed(b"", last=True)

    def _event(self, event: bytes) -> bytes:
        if not event.startswith(b"data: ") or event.strip() == b"data: [DONE]":
            return event
        try:
            chunk = json.loads(event[len(b"data: "):])
        except ValueError:
            return event
        if not isinstance(chunk, dict) or not self.rewrite(chunk):
            return event
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode()


def replay_body(body: bytes, receive):
    """An ASGI ``receive`` that gives ``body`` once, then the client's own messages (its disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def rewriting_send(send, stream: Callable[[], ChunkRewriter], rewrite_json: Callable[[dict[str, Any]], dict[str, Any]]):
    """An ASGI ``send`` that rewrites a 200 response: an event stream chunk by chunk through
    ``stream()``'s rewriter, a JSON object through ``rewrite_json``; anything else passes as it is."""
    state: dict[str, Any] = {"mode": None, "start": None, "body": b""}

    async def wrapped_send(message):
        if message["type"] == "http.response.start":
            ctype = dict(message.get("headers") or []).get(b"content-type", b"")
            if message["status"] == 200 and ctype.startswith(b"text/event-stream"):
                state["mode"] = stream()
            elif message["status"] == 200 and ctype.startswith(b"application/json"):
                state["mode"], state["start"] = "json", message  # sent once the new length is known
                return
            return await send(message)
        mode = state["mode"]
        if message["type"] != "http.response.body" or mode is None:
            return await send(message)
        more = message.get("more_body", False)
        if isinstance(mode, ChunkRewriter):
            return await send({**message, "body": mode.feed(message.get("body", b""), last=not more)})
        state["body"] += message.get("body", b"")
        if more:
            return
        body = state["body"]
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            body = json.dumps(rewrite_json(payload)).encode()
        start = state["start"]
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped_send


def json_object(body: bytes) -> Optional[dict[str, Any]]:
    """``body`` as a JSON object, or None (not JSON, too deep, or not an object)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


async def read_body(receive) -> Optional[bytes]:
    """The whole request body, or None when the client left first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
