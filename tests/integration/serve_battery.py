"""Malformed requests for the served OpenAI routes: systematic and seeded-random mutations of two
valid bodies (one per route), each paired with the ``param`` OpenAI would name (None for a body
that is not a JSON object at all).

Every mutation here is refused by OpenAI's API: a wrong JSON type for a field (no string or bool
coercion), a value out of OpenAI's range, a missing required field, an unknown model, a made-up role,
a message without content, bodies that are not UTF-8 JSON objects, JSON nested 2,000 deep, arrays of
tens of thousands of items with one bad one, a body over the server's size limit, a wrong
Content-Type, and unknown routes and methods.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any, Optional

JSON = {"Content-Type": "application/json"}


@dataclass
class Mutation:
    name: str
    route: str
    body: bytes
    param: Optional[str] = None  # the parameter the error must name; None: any (or none)
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    method: str = "POST"


def base_bodies(model: str) -> dict[str, dict[str, Any]]:
    return {
        "/v1/chat/completions": {"model": model, "max_tokens": 4, "temperature": 0, "messages": [
            {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 3?"}]},
        "/v1/completions": {"model": model, "prompt": "<reasoning>\n", "max_tokens": 4, "temperature": 0},
    }


WRONG = {
    "int": ["8", True, False, 1.5, 8.0, [8], {"v": 8}],
    "number": ["0.5", True, False, [0.5], {"v": 1}],
    "bool": ["yes", "true", 1, 0, [True], {"v": True}],
    "str": [5, True, 1.5, ["x"], {"v": "x"}],
}
# field -> (JSON type, values of the right type that are out of OpenAI's range); per route
SHARED = {
    "n": ("int", [0, -1, 129]), "temperature": ("number", [-0.1, 2.01, 100]), "top_p": ("number", [-0.5, 1.01, 3]),
    "frequency_penalty": ("number", [-2.5, 3]), "presence_penalty": ("number", [-3, 2.5]),
    "seed": ("int", [2**63, -(2**63) - 1]), "stream": ("bool", []), "user": ("str", []),
    "stop": (None, [5, True, {"v": "x"}, [1], [None], [], ["a", "b", "c", "d", "e"], ["a", 5]]),
    "logit_bias": (None, ["x", 5, [1], {"abc": 1}, {"1": 101}, {"1": -101}, {"1": "5"}, {"1": True}, {"1": 0.5}]),
    "stream_options": (None, [True, "x", 5, {"include_usage": "yes"}, {"include_usage": 1}]),
    # vLLM's own sampling fields: their types are strict too
    "top_k": ("int", []), "min_p": ("number", []), "repetition_penalty": ("number", []), "ignore_eos": ("bool", []),
    "min_tokens": ("int", []), "skip_special_tokens": ("bool", []),
    "stop_token_ids": (None, ["1", 5, [True], ["1"], [1.5]]),
}
FIELDS = {
    "/v1/chat/completions": {
        **SHARED, "max_tokens": ("int", [0, -1]), "max_completion_tokens": ("int", [0, -3]), "logprobs": ("bool", []),
        "top_logprobs": (None, ["3", True, 1.5, -1, 21]),
        "parallel_tool_calls": ("bool", []), "reasoning_effort": (None, [5, "extreme", True]),
        "tool_choice": (None, [5, True, "sometimes", [], {"type": "nope"}, {"function": {"name": "f"}}]),
        "tools": (None, [5, "x", {}, [5], [{"type": "function"}], [{"type": "web"}],
                         [{"type": "function", "function": {"name": 5}}], [{"type": "function", "function": {}}]]),
        "response_format": (None, [5, "json", {}, {"type": "yaml"}, {"type": 5}]),
        "metadata": (None, [5, "x", {"k": 5}, {str(i): "v" for i in range(17)}]),
    },
    "/v1/completions": {
        **SHARED, "max_tokens": ("int", [-1, -5]), "logprobs": ("int", [-1, 6]), "echo": ("bool", []),
        "suffix": ("str", []), "best_of": ("int", [-1, 21]),
    },
}
BAD_MODELS = [(None, None), ("", None), (5, None), (True, None), (["x"], None), ({"v": "x"}, None),
              ("nope", "404"), ("arithmetic-tuned ", "404"), ("ARITHMETIC-TUNED", "404"), ("arithmetic", "404")]


def _wrong_values(kind, extra):
    return (WRONG[kind] if kind else []) + extra


def _dump(body) -> bytes:
    return json.dumps(body).encode()


def field_mutations(model: str) -> list[Mutation]:
    out = []
    for route, base in base_bodies(model).items():
        for name, (kind, extra) in FIELDS[route].items():
            for value in _wrong_values(kind, extra):
                body = {**base, name: value}
                if name == "top_logprobs":
                    body["logprobs"] = True
                if name == "stream_options":
                    body["stream"] = True
                out.append(Mutation(f"{route} {name}={json.dumps(value)[:40]}", route, _dump(body), name))
        for value, _ in BAD_MODELS:
            out.append(Mutation(f"{route} model={json.dumps(value)}", route, _dump({**base, "model": value}), "model"))
        missing_model = {k: v for k, v in base.items() if k != "model"}
        out.append(Mutation(f"{route} no model", route, _dump(missing_model), "model"))
    return out


def message_mutations(model: str) -> list[Mutation]:
    route = "/v1/chat/completions"
    base = base_bodies(model)[route]
    user = {"role": "user", "content": "hi"}
    cases: list[tuple[str, Any, str]] = [
        ("no messages", "<drop>", "messages"), ("messages null", None, "messages"), ("messages a string", "hi", "messages"),
        ("messages an object", {"role": "user", "content": "hi"}, "messages"), ("messages empty", [], "messages"),
        ("messages 5", 5, "messages"), ("a string message", ["hi"], "messages[0]"), ("a number message", [5], "messages[0]"),
        ("a null message", [None], "messages[0]"), ("an array message", [[user]], "messages[0]"),
    ]
    for role in ("wizard", "", "User", "SYSTEM", 5, None, True, ["user"]):
        cases.append((f"role {json.dumps(role)}", [{"role": role, "content": "hi"}], "messages[0].role"))
    cases.append(("no role", [{"content": "hi"}], "messages[0].role"))
    for role in ("system", "developer", "user", "tool"):
        extra = {"tool_call_id": "c1"} if role == "tool" else {}
        for content in ("<drop>", None, 5, True, {"text": "hi"}, [], [5], ["hi"], [None], [{"type": "text"}],
                        [{"type": "text", "text": 5}], [{"text": "hi"}], [{"type": 5, "text": "hi"}],
                        [{"type": "wizard", "text": "hi"}], [{"type": "text", "text": "a"}, {"type": "nope"}]):
            message = {"role": role, **extra, **({} if content == "<drop>" else {"content": content})}
            param = "messages[1].content"
            cases.append((f"{role} content={json.dumps(content)[:30]}", [user, message], param))
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    cases += [
        ("image in a system message", [{"role": "system", "content": [image]}, user], "messages[0].content[0].type"),
        ("image in a tool message", [user, {"role": "tool", "tool_call_id": "c", "content": [image]}],
         "messages[1].content[0].type"),
        ("image_url not an object", [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
         "messages[0].content[0].image_url"),
        ("image url a number", [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}],
         "messages[0].content[0].image_url.url"),
        ("image detail made up", [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x", "detail": "max"}}]}],
         "messages[0].content[0].image_url.detail"),
        ("audio format made up", [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "", "format": "ogg"}}]}],
         "messages[0].content[0].input_audio.format"),
        ("refusal in a user message", [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}],
         "messages[0].content[0].type"),
        ("tool without tool_call_id", [user, {"role": "tool", "content": "3"}], "messages[1].tool_call_id"),
        ("tool_call_id a number", [user, {"role": "tool", "tool_call_id": 5, "content": "3"}], "messages[1].tool_call_id"),
        ("function without name", [user, {"role": "function", "content": "3"}], "messages[1].name"),
        ("function content an array", [user, {"role": "function", "name": "f", "content": [{"type": "text", "text": "3"}]}],
         "messages[1].content"),
        ("name a number", [{"role": "user", "name": 5, "content": "hi"}], "messages[0].name"),
        ("assistant with nothing", [user, {"role": "assistant"}], "messages[1].content"),
        ("assistant content null, no calls", [user, {"role": "assistant", "content": None}], "messages[1].content"),
        ("assistant empty tool_calls", [user, {"role": "assistant", "tool_calls": []}], "messages[1].content"),
        ("assistant content 5", [user, {"role": "assistant", "content": 5}], "messages[1].content"),
        ("assistant image", [user, {"role": "assistant", "content": [image]}], "messages[1].content[0].type"),
        ("tool_calls a string", [user, {"role": "assistant", "tool_calls": "x"}], "messages[1].tool_calls"),
        ("tool call a number", [user, {"role": "assistant", "tool_calls": [5]}], "messages[1].tool_calls[0]"),
        ("tool call without id", [user, {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}], "messages[1].tool_calls[0].id"),
        ("tool call without function", [user, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}],
         "messages[1].tool_calls[0].function"),
        ("tool call arguments an object", [user, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]}],
         "messages[1].tool_calls[0].function.arguments"),
        ("tool call type made up", [user, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "magic", "function": {"name": "f", "arguments": "{}"}}]}], "messages[1].tool_calls[0].type"),
    ]
    out = []
    for name, messages, param in cases:
        body = {k: v for k, v in base.items() if k != "messages"}
        if messages != "<drop>":
            body["messages"] = messages
        out.append(Mutation(f"chat {name}", route, _dump(body), param))
    return out


def prompt_mutations(model: str) -> list[Mutation]:
    route = "/v1/completions"
    base = {k: v for k, v in base_bodies(model)[route].items() if k != "prompt"}
    out = [Mutation("completions no prompt", route, _dump(base), "prompt")]
    for prompt in (5, True, 1.5, {"text": "x"}, [], [[]], [1, "a"], ["a", 1], [-1], [True], [1.5], [[1], "a"],
                   [[1], [-2]], [None], [[None]], [["a"]]):
        out.append(Mutation(f"completions prompt={json.dumps(prompt)}", route, _dump({**base, "prompt": prompt}), "prompt"))
    return out


def body_mutations(model: str, max_body_bytes: int) -> list[Mutation]:
    out = []
    for route, base in base_bodies(model).items():
        valid = json.dumps(base)
        raw = {
            "invalid UTF-8 byte": b"\xff" + valid.encode(),
            "invalid UTF-8 in a string": valid.encode().replace(model.encode(), model.encode() + b"\xc3\x28"),
            "overlong UTF-8": valid.encode().replace(model.encode(), b"\xc0\xaf"),
            "UTF-8 encoded surrogate": b'{"model": "\xed\xa0\x80"}', "truncated UTF-8": valid.encode()[:-2] + b'\xe2\x82"}',
            "latin-1 body": valid.replace("<reasoning>", "caf\u00e9").replace("briefly", "caf\u00e9").encode("latin-1"),
            "truncated JSON": valid.encode()[: len(valid) // 2], "single quotes": valid.replace('"', "'").encode(),
            "trailing comma": (valid[:-1] + ",}").encode(),
            "NaN": valid.replace('"temperature": 0', '"temperature": NaN').encode(),
            "Infinity": valid.replace('"temperature": 0', '"temperature": Infinity').encode(),
            "1e400": valid.replace('"temperature": 0', '"temperature": 1e400').encode(),
            "5,000-digit seed": valid.replace('"temperature": 0', '"seed": ' + "9" * 5000).encode(),
            "empty body": b"", "whitespace body": b" \r\n\t", "null": b"null", "true": b"true", "a number": b"42",
            "a string": b'"hello"', "an array": b"[]", "an array of the body": ("[" + valid + "]").encode(),
            "two objects": (valid + valid).encode(), "comment": (valid[:-1] + " /* c */}").encode(),
            "JSON 2,000 deep": b"[" * 2000 + b"]" * 2000,
            "objects 2,000 deep": b'{"a": ' * 2000 + b"1" + b"}" * 2000,
            "2,000 deep inside a field": (valid[:-1] + ', "vllm_xargs": ' + "[" * 2000 + "]" * 2000 + "}").encode(),
            "65 deep inside a field": (valid[:-1] + ', "x": ' + "[" * 65 + "]" * 65 + "}").encode(),
            "lone surrogate escape": valid.replace('"temperature": 0', '"user": "\\ud800"').encode(),
            "body over the size limit": (valid[:-1] + ', "x": "' + "a" * (max_body_bytes + 10) + '"}').encode(),
        }
        out += [Mutation(f"{route} body: {name}", route, body) for name, body in raw.items()]
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                      "application/jsonl", ""):
            out.append(Mutation(f"{route} Content-Type {ctype!r}", route, valid.encode(),
                                headers={"Content-Type": ctype} if ctype else {}))
    chat_base = base_bodies(model)["/v1/chat/completions"]
    text_base = base_bodies(model)["/v1/completions"]
    many = [{"role": "user", "content": "hi"}] * 20_000
    huge = {
        "stop of 10,000 strings": ({**chat_base, "stop": ["x"] * 10_000}, "stop", "/v1/chat/completions"),
        "20,000 messages, the last one a wizard": ({**chat_base, "messages": many + [{"role": "wizard", "content": "x"}]},
                                                   "messages[20000].role", "/v1/chat/completions"),
        "20,000 content parts, one bad": ({**chat_base, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}] * 20_000 + [{"type": "text", "text": 1}]}]}, "messages[0].content[20000].text",
            "/v1/chat/completions"),
        "logit_bias of 50,000 tokens, one out of range": (
            {**chat_base, "logit_bias": {**{str(i): 1 for i in range(50_000)}, "7": 1000}}, "logit_bias",
            "/v1/chat/completions"),
        "100,000 token IDs, the last a string": ({**text_base, "prompt": list(range(100_000)) + ["x"]}, "prompt",
                                                 "/v1/completions"),
        "50,000 prompts, one a number": ({**text_base, "prompt": ["a"] * 50_000 + [5]}, "prompt", "/v1/completions"),
        "stop_token_ids of 100,000, one a string": ({**text_base, "stop_token_ids": [1] * 100_000 + ["1"]}, "stop_token_ids",
                                                    "/v1/completions"),
    }
    out += [Mutation(f"huge: {name}", route, _dump(body), param) for name, (body, param, route) in huge.items()]
    out += [Mutation("unknown route", "/v1/chat/complete", _dump(chat_base)),
            Mutation("unknown route under v1", "/v1/engines/x/completions", _dump(text_base)),
            Mutation("GET a POST route", "/v1/chat/completions", b"", method="GET"),
            Mutation("PUT a POST route", "/v1/completions", _dump(text_base), method="PUT"),
            Mutation("DELETE a POST route", "/v1/chat/completions", b"", method="DELETE")]
    return out


def _set(body: dict, name: str, value) -> None:
    body[name] = value
    if name == "top_logprobs":
        body["logprobs"] = True
    if name == "stream_options":
        body["stream"] = True


def random_mutations(model: str, count: int, seed: int) -> list[Mutation]:
    """``count`` bodies with one to three fields set to wrong values at once (fields and values
    drawn with ``seed``); the error must name one of them."""
    rng = random.Random(seed)
    out, seen = [], set()
    bases = base_bodies(model)
    while len(out) < count:
        route = rng.choice(sorted(bases))
        body = copy.deepcopy(bases[route])
        names = rng.sample(sorted(FIELDS[route]), rng.randint(1, 3))
        for name in names:
            kind, extra = FIELDS[route][name]
            _set(body, name, rng.choice(_wrong_values(kind, extra)))
        if route == "/v1/chat/completions" and rng.random() < 0.3:  # and a broken message
            i = rng.randrange(len(body["messages"]))
            body["messages"][i] = rng.choice([{"role": "wizard", "content": "x"}, {"role": body["messages"][i]["role"]},
                                              {"role": "user", "content": rng.choice([5, None, [], [{"type": "text"}]])}])
            names.append(f"messages[{i}]")
        raw = _dump(body)
        if raw not in seen:
            seen.add(raw)
            out.append(Mutation(f"random {route} {'+'.join(names)}", route, raw, "|".join(names)))
    return out


def battery(model: str, *, random_count: int = 200, seed: int = 20261201, max_body_bytes: int) -> list[Mutation]:
    return (field_mutations(model) + message_mutations(model) + prompt_mutations(model)
            + body_mutations(model, max_body_bytes) + random_mutations(model, random_count, seed))


SHORTFALLS = ("accepted", "server error", "no OpenAI error body", "wrong param", "not OpenAI's type or code")


def problem(m: Mutation, status: int, text: str) -> Optional[tuple[str, str]]:
    """How the answer to ``m`` falls short of OpenAI's contract (one of :data:`SHORTFALLS`, and the
    detail), or None."""
    if not 400 <= status < 500:
        return ("accepted" if status < 400 else "server error"), f"answered {status}"
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not (isinstance(error, dict) and set(payload) == {"error"} and {"message", "type", "param", "code"} <= set(error)
            and isinstance(error["message"], str) and error["message"]):
        return "no OpenAI error body", f"{status}: {text[:120]!r}"
    param = error["param"]
    if m.param is not None:
        wanted = m.param.split("|")
        if not (isinstance(param, str) and any(param == w or param.startswith((w + ".", w + "[")) for w in wanted)):
            return "wrong param", f"{status} naming param {param!r}, not {m.param!r}"
    if error["type"] != "invalid_request_error" or not isinstance(error["code"], (str, type(None))):
        return "not OpenAI's type or code", f"{status} with type {error['type']!r}, code {error['code']!r}"
    return None
