"""Server-sent events rewritten chunk by chunk, for the middlewares that edit streamed completions.

A streamed OpenAI response is ``data: {json}`` events separated by blank lines, split across body
messages at arbitrary bytes. :class:`ChunkRewriter` reassembles whole events, hands each JSON chunk
to :meth:`ChunkRewriter.rewrite`, and passes through unchanged what it does not touch (the final
``data: [DONE]``, comments, anything that is not JSON).
"""

from __future__ import annotations

import json
from typing import Any


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
