"""The strict request check in front of vLLM, on plain dicts and bytes, and its two ASGI layers
driven in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from grpo_ray.serve.errors import OpenAIErrorMiddleware, openai_error
from grpo_ray.serve.schemas import OPENAI_PARTS, VLLM_PARTS, ChatCompletionRequest, CompletionRequest
from grpo_ray.serve.validation import (
    MAX_DEPTH, RequestError, RequestValidationMiddleware, check_payload, nesting_depth, param_path, parse_json_object,
)

pytestmark = pytest.mark.unit

SERVED = {"base", "tuned"}
USER = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return {"model": "tuned", "messages": USER, **fields}


def text(**fields):
    return {"model": "tuned", "prompt": "hi", **fields}


def refusal(route, payload) -> RequestError:
    with pytest.raises(RequestError) as err:
        check_payload(route, payload, SERVED)
    return err.value


VALID = [
    ("chat", chat()),
    ("chat", chat(max_tokens=48, temperature=0, stream=True, stream_options={"include_usage": True})),
    ("chat", chat(n=3, seed=7, top_p=0.9, temperature=1.0, stop=["\n"], logprobs=True, top_logprobs=5,
                  frequency_penalty=-2, presence_penalty=2.0, logit_bias={"12": -100}, user="u",
                  max_completion_tokens=8, seed_extra="unknown fields pass through")),
    ("chat", chat(top_k=5, min_p=0.1, repetition_penalty=1.1, min_tokens=1, ignore_eos=False, stop_token_ids=[2],
                  skip_special_tokens=True, chat_template_kwargs={"enable_thinking": False}, vllm_xargs={"a": 1})),
    ("chat", {"model": "base", "messages": [
        {"role": "developer", "content": "be brief"}, {"role": "system", "content": [{"type": "text", "text": "s"}]},
        {"role": "user", "name": "ann", "content": [
            {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}], "reasoning_content": "vLLM's"},
        {"role": "function", "name": "add", "content": None}],
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "add"}}}),
    ("chat", chat(tool_choice="auto", response_format={"type": "json_object"}, metadata={"k": "v"}, stop="x")),
    ("chat", chat(messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}]}])),
    ("completions", text()),
    ("completions", text(prompt=["a", "b"], max_tokens=0, echo=True, logprobs=5, n=2, best_of=2, suffix="")),
    ("completions", text(prompt=[1, 2, 3], stream=True, stream_options={"include_usage": True}, seed=-(2**63))),
    ("completions", text(prompt=[[1, 2], [3]], temperature=2, top_p=0)),
    ("completions", {"model": "base", "prompt": None}),  # OpenAI allows null; vLLM then says why not
    ("completions", {"model": "base", "prompt_embeds": "AAAA"}),  # vLLM's alternative to a prompt
]


@pytest.mark.parametrize("route, payload", VALID, ids=range(len(VALID)))
def test_valid_requests_pass(route, payload) -> None:
    check_payload(route, payload, SERVED)


# (route, payload, param, code): the lax coercions and defaults vLLM accepts, and their neighbours
REFUSED = [
    ("chat", chat(max_tokens="8"), "max_tokens", "invalid_type"),
    ("chat", chat(max_tokens=True), "max_tokens", "invalid_type"),  # bool is not an int
    ("chat", chat(max_tokens=8.0), "max_tokens", "invalid_type"),
    ("chat", chat(max_tokens=0), "max_tokens", "integer_below_min_value"),
    ("completions", text(n="2"), "n", "invalid_type"),
    ("chat", chat(n=129), "n", "integer_above_max_value"),
    ("chat", chat(stream="yes"), "stream", "invalid_type"),
    ("chat", chat(stream=1), "stream", "invalid_type"),
    ("chat", chat(temperature=True), "temperature", "invalid_type"),
    ("chat", chat(temperature="0.5"), "temperature", "invalid_type"),
    ("chat", chat(temperature=2.5), "temperature", "decimal_above_max_value"),
    ("completions", text(top_p=-0.1), "top_p", "decimal_below_min_value"),
    ("chat", chat(seed=2**63), "seed", "integer_above_max_value"),
    ("chat", chat(top_logprobs=21, logprobs=True), "top_logprobs", "integer_above_max_value"),
    ("completions", text(logprobs=True), "logprobs", "invalid_type"),
    ("chat", chat(stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length"),
    ("chat", chat(stop=[1]), "stop[0]", "invalid_type"),
    ("chat", chat(logit_bias={"x": 1}), "logit_bias.x", "invalid_value"),
    ("chat", chat(logit_bias={"5": 0.5}), "logit_bias.5", "invalid_type"),
    ("chat", chat(stream_options={"include_usage": "true"}), "stream_options.include_usage", "invalid_type"),
    ("chat", chat(top_k="5"), "top_k", "invalid_type"),  # vLLM's own fields are strict too
    ("chat", {"messages": USER}, "model", "missing_required_parameter"),
    ("chat", chat(model=None), "model", "invalid_type"),
    ("chat", chat(model=""), "model", "empty_string"),
    ("completions", {"model": "base"}, "prompt", "missing_required_parameter"),
    ("completions", text(prompt=[]), "prompt", "empty_array"),
    ("completions", text(prompt=[1, "2"]), "prompt[1]", "invalid_type"),
    ("completions", text(prompt=[[1], [True]]), "prompt[1][0]", "invalid_type"),
    ("completions", text(prompt={"a": 1}), "prompt", "invalid_type"),
    ("chat", {"model": "tuned"}, "messages", "missing_required_parameter"),
    ("chat", chat(messages=[]), "messages", "empty_array"),
    ("chat", chat(messages="hi"), "messages", "invalid_type"),
    ("chat", chat(messages=["hi"]), "messages[0]", "invalid_type"),
    ("chat", chat(messages=[{"role": "user"}]), "messages[0].content", "missing_required_parameter"),
    ("chat", chat(messages=[{"role": "user", "content": None}]), "messages[0].content", "missing_required_parameter"),
    ("chat", chat(messages=[{"role": "assistant"}]), "messages[0].content", "missing_required_parameter"),
    ("chat", chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role", "invalid_value"),
    ("chat", chat(messages=[{"content": "x"}]), "messages[0].role", "missing_required_parameter"),
    ("chat", chat(messages=[*USER, {"role": "tool", "content": "3"}]), "messages[1].tool_call_id",
     "missing_required_parameter"),
    ("chat", chat(messages=[{"role": "function", "content": "3"}]), "messages[0].name", "missing_required_parameter"),
    ("chat", chat(messages=[{"role": "user", "content": 5}]), "messages[0].content", "invalid_type"),
    ("chat", chat(messages=[{"role": "user", "content": []}]), "messages[0].content", "empty_array"),
    ("chat", chat(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text",
     "missing_required_parameter"),
    ("chat", chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "wizard"}]}]),
     "messages[0].content[1].type", "invalid_value"),
    ("chat", chat(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     "messages[0].content[0].type", "invalid_value"),  # images only in user messages
    ("chat", chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]),
     "messages[0].content[0].image_url.url", "invalid_type"),
    ("chat", chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]),
     "messages[0].tool_calls[0].function", "missing_required_parameter"),
    ("chat", chat(tool_choice="sometimes"), "tool_choice", "invalid_value"),
    ("chat", chat(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name", "empty_string"),
    ("chat", chat(response_format={"type": "yaml"}), "response_format.type", "invalid_value"),
]


@pytest.mark.parametrize("route, payload, param, code", REFUSED, ids=[r[2] + ":" + r[3] for r in REFUSED])
def test_refused_requests_name_the_parameter(route, payload, param, code) -> None:
    err = refusal(route, payload)
    assert (err.status, err.param, err.code) == (400, param, code), err.message
    assert f"'{param}'" in err.message and "\n" not in err.message
    body = json.loads(err.body())
    assert body == {"error": {"message": err.message, "type": "invalid_request_error", "param": param, "code": code}}


def test_the_lax_cases_pass_vllms_own_protocol_classes() -> None:
    """Why the layer exists: vLLM 0.32's request models accept what OpenAI refuses."""
    pytest.importorskip("vllm")
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VllmChat

    lax = [chat(max_tokens="8"), chat(max_tokens=True), chat(n="2"), chat(stream="yes"), {"messages": USER},
           chat(model=""), chat(messages=[{"role": "user"}]), chat(messages=[{"role": "wizard", "content": "x"}])]
    for payload in lax:
        VllmChat.model_validate(json.loads(json.dumps(payload)))  # accepted, coerced or defaulted
        assert refusal("chat", payload).status == 400


def test_our_fields_are_vllms_or_openais_and_vllms_part_types_are_known() -> None:
    """A misspelt field would never be checked; a part type vLLM adds would be refused."""
    pytest.importorskip("vllm")
    import openai.types.chat.completion_create_params as openai_chat
    import openai.types.completion_create_params as openai_text
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VllmChat
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest as VllmText
    from vllm.renderers.chat_utils import MM_PARSER_MAP

    pairs = ((ChatCompletionRequest, VllmChat, openai_chat), (CompletionRequest, VllmText, openai_text))
    for ours, vllm, openai in pairs:
        known = set(vllm.model_fields) | set(openai.CompletionCreateParamsBase.__annotations__)
        assert set(ours.model_fields) <= known, set(ours.model_fields) - known
    assert set(MM_PARSER_MAP) <= set(VLLM_PARTS) | set(OPENAI_PARTS)


def test_unknown_model_is_404_model_not_found_and_served_none_skips_it() -> None:
    err = refusal("chat", chat(model="nope"))
    assert (err.status, err.param, err.code) == (404, "model", "model_not_found") and "'tuned'" in err.message
    check_payload("chat", chat(model="nope"), served=None)
    assert refusal("chat", chat(model="Tuned")).status == 404  # names are exact


@pytest.mark.parametrize("body, says", [
    (b"", "empty"), (b" \n", "empty"), (b"\xff\xfe{}", "UTF-8"), (b'{"model": "\xc3("}', "UTF-8"),
    (b"[1, 2]", "an array"), (b'"hi"', "a string"), (b"null", "null"), (b"5", "an integer"),
    (b'{"model": "tuned", "messages": [', "parse"), (b"{'model': 1}", "parse"), (b'{"temperature": NaN}', "NaN"),
    (b'{"temperature": -Infinity}', "Infinity"), (b'{"temperature": 1e400}', "out of range"),
    (b'{"seed": ' + b"9" * 5000 + b"}", "parse"), (b"[" * 2000 + b"]" * 2000, "deeper"),
    (b'{"a": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2001, "deeper"), (b'{"content": "\\ud800"}', "surrogate"),
])
def test_bodies_openai_cannot_parse(body, says) -> None:
    with pytest.raises(RequestError) as err:
        parse_json_object(body)
    assert err.value.status == 400 and err.value.param is None and says in err.value.message


def test_bodies_that_parse() -> None:
    assert parse_json_object(b'{"a": "\\ud83d\\ude00 [[[{{{", "b": [[]]}') == {"a": "\U0001f600 [[[{{{", "b": [[]]}
    at_limit = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)  # inside the body's own object
    assert parse_json_object(('{"a": ' + at_limit + "}").encode())["a"] == json.loads(at_limit)
    with pytest.raises(RequestError, match="deeper"):
        parse_json_object(('{"a": [' + at_limit + "]}").encode())


def _reference_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_reference_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_reference_depth, value), default=0)
    return 0


def _random_json(rng: random.Random, depth: int):
    kind = rng.randrange(5 if depth < 8 else 3)
    if kind == 0:
        return rng.choice([1, -2.5, True, None])
    if kind == 1:
        return "".join(rng.choice('ab"\\[]{}\n\u00e9') for _ in range(rng.randrange(6)))
    if kind == 2:
        return rng.choice(["", "[", "}"])
    if kind == 3:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(i) + rng.choice(["", "[", "\\"]): _random_json(rng, depth + 1) for i in range(rng.randrange(4))}


def test_nesting_depth_matches_a_recursive_count_and_needs_no_recursion() -> None:
    rng = random.Random(0)
    for _ in range(300):
        value = _random_json(rng, 0)
        assert nesting_depth(json.dumps(value)) == _reference_depth(value), json.dumps(value)
    assert nesting_depth("[" * 200_000 + "]" * 200_000) == 200_000  # far past Python's recursion limit
    assert nesting_depth('"[[[[" ') == 0 and nesting_depth('["\\"[[", {}]') == 2


def test_param_path_drops_union_tags() -> None:
    assert param_path(("messages", 0, "content", "<array>", 1, "text")) == "messages[0].content[1].text"
    assert param_path(("logit_bias", "x", "[key]")) == "logit_bias.x" and param_path(()) is None


def _asgi_post(app, path, content, headers=None, method="POST"):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            headers_ = headers or {"content-type": "application/json"}
            return await client.request(method, path, content=content, headers=headers_)

    return asyncio.run(go())


class Recorder:
    """An ASGI app that answers 200 with the body it received, or ``status`` with ``body``."""

    def __init__(self, status=200, body=None, content_type=b"application/json"):
        self.status, self.body, self.content_type, self.bodies = status, body, content_type, []

    async def __call__(self, scope, receive, send):
        received = b""
        while True:
            message = await receive()
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(received)
        out = received if self.body is None else self.body
        headers = [(b"content-type", self.content_type)]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": out})


def test_middleware_passes_valid_bodies_byte_for_byte_and_answers_the_rest() -> None:
    inner = Recorder()
    app = RequestValidationMiddleware(inner, served_models=lambda: SERVED, max_body_bytes=1000)
    raw = b'{"model": "tuned",  "messages": [{"role": "user", "content": "hi"}], "seed": 1}'
    assert _asgi_post(app, "/v1/chat/completions", raw).content == raw and inner.bodies == [raw]
    r = _asgi_post(app, "/v1/chat/completions", json.dumps(chat(max_tokens="8")).encode())
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens" and len(inner.bodies) == 1
    r = _asgi_post(app, "/v1/completions", json.dumps(text(model="nope")).encode())
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = _asgi_post(app, "/v1/completions", json.dumps(text(prompt="x" * 2000)).encode())
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    r = _asgi_post(app, "/v1/completions", raw, headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "application/json" in r.json()["error"]["message"]
    assert _asgi_post(app, "/v1/models", b"not json").status_code == 200  # other routes are vLLM's
    assert _asgi_post(app, "/v1/chat/completions", b"", method="GET").status_code == 200
    assert len(inner.bodies) == 3


@pytest.mark.parametrize("status, body, content_type, message, param", [
    (404, b"Not Found", b"text/plain", "Invalid URL (POST /v1/nowhere)", None),
    (404, b'{"detail": "Not Found"}', b"application/json", "Invalid URL (POST /v1/nowhere)", None),
    (405, b"Method Not Allowed", b"text/plain", "Invalid method for URL (POST /v1/nowhere)", None),
    (400, b'{"detail": "There was an error parsing the body"}', b"application/json",
     "There was an error parsing the body", None),
    (413, b"", b"text/plain", "Request Entity Too Large", None),
    (400, b'{"error": {"message": "bad n", "type": "BadRequestError", "param": "n", "code": 400}}',
     b"application/json", "bad n", "n"),
])
def test_error_middleware_gives_every_error_openais_shape(status, body, content_type, message, param) -> None:
    r = _asgi_post(OpenAIErrorMiddleware(Recorder(status, body, content_type)), "/v1/nowhere", b"{}")
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    assert int(r.headers["content-length"]) == len(r.content)


def test_error_middleware_leaves_successes_and_openai_errors_alone() -> None:
    ok = _asgi_post(OpenAIErrorMiddleware(Recorder(200, b"plain", b"text/plain")), "/x", b"")
    assert ok.status_code == 200 and ok.content == b"plain"
    body = RequestError("m", param="n", code="invalid_type").body()
    assert openai_error(400, body, "POST", "/x") == body
    server = json.loads(openai_error(500, b"boom", "POST", "/x"))["error"]
    assert server == {"message": "boom", "type": "server_error", "param": None, "code": None}
