"""The serve tools layer on a scripted inner app (what vLLM's server would answer): OpenAI's tool
protocol for a template without tools, calls that began in the run's assistant prefix parsed into
tool_calls, and --run-tools running the calculator turn after turn with the transcript returned."""

from __future__ import annotations

import asyncio
import json

import pytest

from grpo_ray.models.paths import resolve_model_path
from grpo_ray.serve.tools import ServedTools, ToolsMiddleware
from grpo_ray.tools import resolve_tool

pytestmark = pytest.mark.unit

CALC = resolve_tool("calculator").schema
PREFIX = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "'


class Scripted:
    """An ASGI app answering chat requests from a list of (content, tool_calls) replies, recording requests."""

    def __init__(self, replies) -> None:
        self.replies, self.requests = list(replies), []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.requests.append(json.loads(message["body"]))
        content, calls = self.replies.pop(0)
        reply = {"id": "x", "object": "chat.completion", "model": "m", "choices": [
            {"index": 0, "finish_reason": "tool_calls" if calls else "stop",
             "message": {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}}]}
        body = json.dumps(reply).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def post(app, payload):
    body = json.dumps(payload).encode()
    sent = {"body": b""}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        else:
            sent["body"] += message.get("body", b"")

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent["status"], json.loads(sent["body"])


def middleware(inner, **served):
    model = resolve_model_path("builtin:arithmetic-base")  # a ChatML template with no tools
    return ToolsMiddleware(inner, {"m": ServedTools("m", native=False, **served)}, model, "hermes")


def test_client_tools_are_described_and_a_call_in_the_text_comes_back_as_tool_calls() -> None:
    call_text = PREFIX + '3 + 4"}}\n</tool_call>'
    inner = Scripted([(call_text, None)])
    status, reply = post(middleware(inner), {"model": "m", "tools": [CALC], "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "3 + 4?"}]})
    assert status == 200
    system = inner.requests[0]["messages"][0]["content"]
    assert system.startswith("Be brief.\n\nYou can call these tools:\n<tools>") and '"calculator"' in system
    message = reply["choices"][0]["message"]
    assert reply["choices"][0]["finish_reason"] == "tool_calls" and message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "calculator", "arguments": json.dumps({"expression": "3 + 4"})}


def test_earlier_calls_are_written_back_as_the_text_the_model_wrote() -> None:
    inner = Scripted([("<answer>7</answer>", None)])
    call = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "3 + 4"}'}}
    post(middleware(inner), {"model": "m", "tools": [CALC], "messages": [
        {"role": "user", "content": "3 + 4?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "7"}]})
    sent = inner.requests[0]["messages"]
    assert sent[-2] == {"role": "assistant", "content": '<tool_call>\n{"name": "calculator", "arguments": {"expression": "3 + 4"}}\n</tool_call>'}
    assert sent[-1] == {"role": "tool", "content": "7"}


def test_run_tools_runs_the_calculator_and_returns_the_transcript() -> None:
    inner = Scripted([(PREFIX + '12 * 30"}}\n</tool_call>', None), ("<reasoning>\n12 * 30 = 360\n</reasoning>\n<answer>\n360\n</answer>", None)])
    status, reply = post(middleware(inner, run_tools=("calculator",), max_turns=3),
                         {"model": "m", "messages": [{"role": "user", "content": "12 * 30?"}]})
    assert status == 200 and reply["choices"][0]["message"]["content"].endswith("<answer>\n360\n</answer>")
    assert [m["role"] for m in reply["transcript"]] == ["assistant", "tool", "assistant"]
    assert reply["transcript"][1]["content"] == "360"  # the server ran the calculator
    second = inner.requests[1]
    assert second["add_generation_prompt"] is True and second["continue_final_message"] is False
    assert second["messages"][-1]["role"] == "tool" and second["messages"][-1]["content"] == "360"
    status, refused = post(middleware(Scripted([]), run_tools=("calculator",)),
                           {"model": "m", "stream": True, "messages": [{"role": "user", "content": "1 + 1?"}]})
    assert status == 400 and refused["error"]["param"] == "stream"


def test_a_call_begun_in_the_runs_assistant_prefix_is_read_with_it() -> None:
    recipe_applied = {"model": "m", "continue_final_message": True, "add_generation_prompt": False, "messages": [
        {"role": "system", "content": "First call the calculator."}, {"role": "user", "content": "12 * 30?"},
        {"role": "assistant", "content": PREFIX}]}  # what the run-prompt layer sends on
    inner = Scripted([('12 * 30"}}\n</tool_call>', None)])
    status, reply = post(middleware(inner), {**recipe_applied, "tools": [CALC]})
    assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == json.dumps({"expression": "12 * 30"})
    assert inner.requests[0]["messages"][-1] == {"role": "assistant", "content": PREFIX}  # still continued
    inner = Scripted([('12 * 30"}}\n</tool_call>', None), ("<answer>\n360\n</answer>", None)])
    status, reply = post(middleware(inner, run_tools=("calculator",)), recipe_applied)
    first = reply["transcript"][0]["content"]
    assert first == PREFIX + '12 * 30"}}\n</tool_call>' and reply["transcript"][1]["content"] == "360"
    assert reply["choices"][0]["message"]["content"] == "<answer>\n360\n</answer>"
    second = inner.requests[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": first} and second[-1] == {"role": "tool", "content": "360"}
    assert "You can call these tools" in second[0]["content"]
