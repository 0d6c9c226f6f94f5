"""OpenAI's error body on every error response of the server.

OpenAI answers a failed request with ``{"error": {"message", "type", "param", "code"}}``: ``type``
is ``invalid_request_error`` for a client's mistake, ``param`` names the request field at fault (or
is null) and ``code`` is a short string such as ``model_not_found`` (or null). vLLM's own errors
have that shape but its own ``type`` names (``BadRequestError``) and the HTTP status as ``code``;
Starlette's 404 (unknown route) and 405 (wrong method) are plain text, and FastAPI's "error
parsing the body" is ``{"detail": ...}``. :class:`OpenAIErrorMiddleware` rewrites each of these
into OpenAI's shape, keeping its status and message. No Ray or vLLM import here.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Optional

# OpenAI's error types; anything else (vLLM's "BadRequestError", "NotFoundError") is replaced
OPENAI_TYPES = {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                "rate_limit_error", "server_error", "api_error"}
_MAX_MESSAGE = 2000


def error_body(message: str, *, status: int = 400, param: Optional[str] = None, code: Optional[str] = None) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def openai_error(status: int, body: bytes, method: str, path: str) -> bytes:
    """``body`` of an error response with ``status`` as OpenAI writes it (unchanged if it already is)."""
    try:
        payload: Any = json.loads(body) if body.strip() else None
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = error.get("type")
        param, code = error.get("param"), error.get("code")
        if kind not in OPENAI_TYPES:
            kind = "invalid_request_error" if status < 500 else "server_error"
        fixed = {"message": error["message"], "type": kind,
                 "param": param if isinstance(param, str) else None,
                 "code": code if isinstance(code, str) else None}  # vLLM puts the HTTP status here
        return body if fixed == error and set(payload) == {"error"} else json.dumps({"error": fixed}).encode()
    if status == 404 and (payload is None or payload == {"detail": "Not Found"}):
        return error_body(f"Invalid URL ({method} {path})", status=status)
    if status == 405:
        return error_body(f"Invalid method for URL ({method} {path})", status=status)
    if isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        message = payload["detail"]
    elif payload is None and body.strip():
        message = body.decode("utf-8", "replace").strip()
    else:
        message = _phrase(status)
    return error_body(message[:_MAX_MESSAGE], status=status)


class OpenAIErrorMiddleware:
    """ASGI middleware: every response with status >= 400 leaves with OpenAI's error body."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        state: dict[str, Any] = {"start": None, "body": b""}

        async def wrapped_send(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                state["start"] = message  # held until the body is known
                return
            if state["start"] is None or message["type"] != "http.response.body":
                return await send(message)
            state["body"] += message.get("body", b"")
            if message.get("more_body", False):
                return
            start = state["start"]
            body = openai_error(start["status"], state["body"], scope.get("method", ""), scope.get("path", ""))
            headers = [(k, v) for k, v in start.get("headers", [])
                       if k.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return await self.app(scope, receive, wrapped_send)
