"""Requests to ``/v1/chat/completions`` and ``/v1/completions`` checked before they reach vLLM.

vLLM's protocol classes validate in pydantic's lax mode: ``"8"`` or ``true`` pass as
``max_tokens``, ``"yes"`` as ``stream``, a missing ``model`` falls back to the default, a message
may have no content or a made-up role, and invalid UTF-8 or JSON nested 2,000 deep get a bare 400.
:class:`RequestValidationMiddleware` answers all of those as OpenAI does, with a 4xx and an error
body naming the parameter, and hands every other request to vLLM byte for byte:

1. the body: at most ``max_body_bytes`` (413), ``Content-Type: application/json``, valid UTF-8,
   arrays and objects nested at most :data:`MAX_DEPTH` deep (counted without recursion, before
   parsing), valid JSON (no ``NaN``; no lone surrogate ``\\ud800``, which a tokenizer cannot encode),
   and an object;
2. its fields, by the strict models of :mod:`grpo_ray.serve.schemas`;
3. ``model``: one the server serves (base model or adapter), else 404 ``model_not_found``.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any, Callable, Collection, Optional

from pydantic import ValidationError

from grpo_ray.serve.asgi import replay_body
from grpo_ray.serve.errors import error_body
from grpo_ray.serve.schemas import REQUESTS, json_kind

ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
MAX_DEPTH = 64  # a chat request nests ~6 deep; JSON schemas in tools and response_format need more
MAX_BODY_BYTES = 32 * 2**20

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class RequestError(Exception):
    """A request OpenAI would refuse: HTTP ``status`` and the fields of OpenAI's error body."""

    def __init__(self, message: str, *, status: int = 400, param: Optional[str] = None,
                 code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code

    def body(self) -> bytes:
        return error_body(self.message, status=self.status, param=self.param, code=self.code)


def nesting_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest, with no recursion: strings are cut
    out first (their brackets do not count), then each remaining bracket steps the depth."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400 parses as inf
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def parse_json_object(body: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``body`` as the JSON object OpenAI takes, or the :class:`RequestError` OpenAI would answer."""
    if not body.strip():
        raise RequestError("The request body is empty; send a JSON object.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"The request body is not valid UTF-8 (byte {err.start}); send UTF-8 JSON.") from None
    if nesting_depth(text) > max_depth:
        raise RequestError(f"The JSON body of the request nests deeper than {max_depth} levels.")
    try:
        payload = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as err:  # ValueError: bad JSON, NaN, 1e400, an integer of 4,300+ digits
        raise RequestError(f"We could not parse the JSON body of your request: {err}.") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError("The JSON body of the request has a lone surrogate escape (\\ud800-\\udfff) "
                               "in a string; strings must be valid Unicode.") from None
    if not isinstance(payload, dict):
        raise RequestError(f"The request body must be a JSON object, but got {_article(json_kind(payload))}.")
    return payload


def _article(kind: str) -> str:
    return kind if kind == "null" else f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def param_path(loc: tuple) -> Optional[str]:
    """pydantic's error location as OpenAI names a parameter (``messages[0].content[1].text``),
    without the union branch tags (``<array>``) and dict-key markers pydantic adds."""
    out = ""
    for seg in loc:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif not (seg.startswith("<") and seg.endswith(">")) and seg != "[key]":
            out += f".{seg}" if out else seg
    return out or None


_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "a boolean", "string_type": "a string",
             "list_type": "an array", "dict_type": "an object", "model_type": "an object",
             "model_attributes_type": "an object"}
_BOUNDS = {"greater_than_equal": ("ge", ">=", "below_min"), "greater_than": ("gt", ">", "below_min"),
           "less_than_equal": ("le", "<=", "above_max"), "less_than": ("lt", "<", "above_max")}


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else _article(json_kind(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _expected_values(expected: Any) -> str:
    return ", ".join(f"'{v}'" for v in expected) if isinstance(expected, (tuple, list)) else str(expected)


def request_error(err: dict[str, Any]) -> RequestError:
    """One pydantic error (``ValidationError.errors()[i]``) as OpenAI's 400 for it."""
    ctx, kind, value = err.get("ctx") or {}, err["type"], err.get("input")
    param = param_path(tuple(err["loc"]))
    if "field" in ctx:  # raised by a model validator about one of the model's fields
        field = ctx["field"]
        param = f"{param}{'' if field.startswith('[') else '.'}{field}" if param else field
        value = ctx.get("value", value)
    where = f"'{param}'" if param else "the request"
    if kind == "missing":
        return RequestError(f"Missing required parameter: {where}.", param=param, code="missing_required_parameter")
    if kind in _EXPECTED or kind == "invalid_type":
        expected = err["msg"] if kind == "invalid_type" else _EXPECTED[kind]
        got = ctx.get("got") or _article(json_kind(value))
        return RequestError(f"Invalid type for {where}: expected {expected}, but got {got} instead.",
                            param=param, code="invalid_type")
    if kind in ("literal_error", "invalid_value"):
        expected = ctx.get("expected", "")
        return RequestError(f"Invalid value for {where}: {_shown(value)}. Supported values are: "
                            f"{_expected_values(expected)}.", param=param, code="invalid_value")
    if kind in _BOUNDS:
        key, op, side = _BOUNDS[kind]
        bound = ctx[key]  # a float for a number field, an int for an integer field
        noun = "decimal" if isinstance(bound, float) else "integer"
        shown_bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        words = "below minimum" if side == "below_min" else "above maximum"
        return RequestError(f"Invalid {where}: {noun} {words} value. Expected a value {op} {shown_bound}, "
                            f"but got {_shown(value)} instead.", param=param, code=f"{noun}_{side}_value")
    if kind == "too_short":
        return RequestError(f"Invalid {where}: empty array. Expected an array with minimum length "
                            f"{ctx['min_length']}, but got an empty array instead.", param=param, code="empty_array")
    if kind == "string_too_short":
        return RequestError(f"Invalid {where}: empty string. Expected a string with minimum length "
                            f"{ctx['min_length']}, but got an empty string instead.", param=param, code="empty_string")
    if kind == "too_long":
        noun = "array" if ctx.get("field_type") == "List" else "object"
        return RequestError(f"Invalid {where}: {noun} too long. Expected at most {ctx['max_length']} "
                            f"{'items' if noun == 'array' else 'keys'}.", param=param, code=f"{noun}_above_max_length")
    if kind == "string_too_long":
        return RequestError(f"Invalid {where}: string too long. Expected a string with maximum length "
                            f"{ctx['max_length']}.", param=param, code="string_above_max_length")
    if kind == "string_pattern_mismatch":
        return RequestError(f"Invalid {where}: {_shown(value)} is not a token ID (a string of digits).",
                            param=param, code="invalid_value")
    if kind == "finite_number":
        return RequestError(f"Invalid {where}: expected a finite number.", param=param, code="invalid_value")
    return RequestError(f"Invalid {where}: {err['msg']}.", param=param, code="invalid_value")


def check_payload(route: str, payload: dict[str, Any], served: Optional[Collection[str]] = None) -> None:
    """Raise the :class:`RequestError` OpenAI would answer for ``payload`` on ``route`` ("chat" or
    "completions"); ``served`` are the model names the server knows (None: any)."""
    try:
        REQUESTS[route].model_validate(payload)
    except ValidationError as err:
        raise request_error(err.errors(include_url=False)[0]) from None
    model = payload["model"]
    if served is not None and model not in served:
        raise RequestError(f"The model '{model}' does not exist; this server serves "
                           f"{', '.join(repr(m) for m in sorted(served))}.", status=404, param="model",
                           code="model_not_found")


def check_request(route: str, body: bytes, content_type: str, served: Optional[Collection[str]] = None) -> None:
    """The whole check of one POST to ``route``: headers, body, then fields."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(f"Content-Type must be application/json, but got {content_type or 'none'!r}.")
    check_payload(route, parse_json_object(body), served)


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


class RequestValidationMiddleware:
    """ASGI middleware: a POST to a completions route that OpenAI would refuse is answered here;
    the rest reach ``app`` with their body unchanged. ``served_models()`` gives the names the server
    knows now (None: skip that check, e.g. when vLLM loads adapters at run time)."""

    def __init__(self, app, served_models: Callable[[], Optional[Collection[str]]] = lambda: None,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.served_models, self.max_body_bytes = app, served_models, max_body_bytes

    async def __call__(self, scope, receive, send):
        route = ROUTES.get(scope.get("path", "")) if scope.get("type") == "http" else None
        if route is None or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        try:
            body = await self._read_body(scope, receive)
            if body is None:  # the client left before sending it all
                return
            check_request(route, body, _header(scope, b"content-type"), self.served_models())
        except RequestError as err:
            return await _answer(send, err)
        return await self.app(scope, replay_body(body, receive), send)

    async def _read_body(self, scope, receive) -> Optional[bytes]:
        too_big = RequestError(f"The request body is over {self.max_body_bytes} bytes.", status=413)
        length = _header(scope, b"content-length")
        if length.isdigit() and int(length) > self.max_body_bytes:
            raise too_big
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _answer(send, err: RequestError) -> None:
    body = err.body()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
