"""The training run's prompt recipe on chat requests (serve/prompts.py): the rewrite on plain dicts,
the run found from a checkpoint's config.yaml, and the ASGI layer driven in-process through httpx's
ASGI transport in front of a stand-in app that echoes what it received."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from grpo_ray.data.prompts import PromptRecipe
from grpo_ray.serve.prompts import PrefixStream, RunPromptMiddleware, apply_recipe, find_served_prompts, prefix_json

pytestmark = pytest.mark.unit

RECIPE = PromptRecipe("S", (("1+1?", "<answer>2</answer>"),), "<reasoning>\n")
USER = {"role": "user", "content": "2+2?"}


def roles_and_contents(payload):
    return [(m["role"], m["content"]) for m in payload["messages"]]


def test_a_bare_question_becomes_the_recipes_prompt() -> None:
    out, prefix = apply_recipe({"model": "m", "messages": [USER], "max_tokens": 8}, RECIPE)
    assert out["messages"] == RECIPE.messages("2+2?") and prefix == "<reasoning>\n"
    assert out["continue_final_message"] is True and out["add_generation_prompt"] is False and out["max_tokens"] == 8


@pytest.mark.parametrize("role", ["system", "developer"])
def test_the_clients_system_message_is_kept_and_the_demonstrations_follow_it(role) -> None:
    out, _ = apply_recipe({"messages": [{"role": role, "content": "mine"}, USER]}, RECIPE)
    assert roles_and_contents(out)[:4] == [(role, "mine"), ("user", "1+1?"), ("assistant", "<answer>2</answer>"),
                                           ("user", "2+2?")]


def test_a_trailing_assistant_message_is_the_clients_prefix() -> None:
    out, prefix = apply_recipe({"messages": [USER, {"role": "assistant", "content": "<think>"}]}, RECIPE)
    assert roles_and_contents(out)[-2:] == [("user", "2+2?"), ("assistant", "<think>")] and prefix == ""
    assert "continue_final_message" not in out and "add_generation_prompt" not in out


@pytest.mark.parametrize("field", [{"add_generation_prompt": True}, {"continue_final_message": False}])
def test_a_client_that_sets_the_generation_fields_gets_no_prefix(field) -> None:
    out, prefix = apply_recipe({"messages": [USER], **field}, RECIPE)
    assert out["messages"][-1] == USER and prefix == "" and {k: out[k] for k in field} == field


def test_echo_leaves_the_prefix_to_vllm_and_an_empty_recipe_changes_nothing() -> None:
    out, prefix = apply_recipe({"messages": [USER], "echo": True}, RECIPE)
    assert out["messages"][-1]["content"] == "<reasoning>\n" and prefix == ""
    body = {"messages": [USER]}
    assert apply_recipe(body, PromptRecipe("")) == (body, "")


def test_prefix_goes_before_each_choices_content_and_first_delta_only() -> None:
    reply = {"choices": [{"index": 0, "message": {"content": "2+2=4"}}, {"index": 1, "message": {"content": None}}]}
    assert [c["message"]["content"] for c in prefix_json(reply, "<r>")["choices"]] == ["<r>2+2=4", None]
    stream = PrefixStream("<r>")
    events = [{"choices": [{"index": i, "delta": {"role": "assistant", "content": ""}}]} for i in (0, 1)]
    events += [{"choices": [{"index": 0, "delta": {"content": "4"}}]}, {"choices": []}]
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    # fed in ragged pieces, as a network would
    out = b"".join(stream.feed(raw[i:i + 7], last=i + 7 >= len(raw)) for i in range(0, len(raw), 7))
    chunks = [json.loads(e[6:]) for e in out.split(b"\n\n") if e.startswith(b"data: {")]
    deltas = [(c["choices"][0]["index"], c["choices"][0]["delta"]["content"]) for c in chunks if c["choices"]]
    assert deltas == [(0, "<r>"), (1, "<r>"), (0, "4")] and out.endswith(b"data: [DONE]\n\n")


def test_the_run_is_found_from_a_checkpoints_config(tmp_path) -> None:
    from grpo_ray.config import DataConfig, GRPOConfig

    ckpt = tmp_path / "out" / "checkpoints" / "step-000001"
    (ckpt / "adapter").mkdir(parents=True)
    data = DataConfig(source="pubmedqa", assistant_prefix="<reasoning>\n",
                      demonstrations=[{"question": "q", "answer": "a"}])
    (ckpt / "config.yaml").write_text(GRPOConfig(data=data).to_yaml())
    (tmp_path / "plain").mkdir()
    found = find_served_prompts({"run": str(ckpt / "adapter"), "plain": str(tmp_path / "plain")})
    assert [p.model for p in found] == ["run"] and found[0].source == str(ckpt / "config.yaml")
    recipe = found[0].recipe
    # no system_prompt in the run: the tag style's default, plus PubMedQA's instruction line, as training had
    assert recipe.system_prompt.startswith("Respond in the following format")
    assert "yes, no or maybe" in recipe.system_prompt
    assert recipe.demonstrations == (("q", "a"),) and recipe.assistant_prefix == "<reasoning>\n"
    assert "1 demonstration(s)" in found[0].describe() and "'<reasoning>\\n'" in found[0].describe()


def _echo_app(reply_stream: bool):
    """A stand-in for vLLM: answers with the request it got, as a chat completion (or a stream)."""
    async def app(scope, receive, send):
        message = await receive()
        got = json.loads(message["body"])
        length = dict(scope["headers"]).get(b"content-length")
        assert length == str(len(message["body"])).encode()  # the rewritten body's own length
        if reply_stream:
            chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                      {"choices": [{"index": 0, "delta": {"content": json.dumps(got)}}]}]
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for c in chunks:
                await send({"type": "http.response.body", "body": b"data: " + json.dumps(c).encode() + b"\n\n",
                            "more_body": True})
            return await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(got)}}]}
        body = json.dumps(reply).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    return app


def _post(app, payload, path="/v1/chat/completions"):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post(path, json=payload)
    return asyncio.run(go())


@pytest.mark.parametrize("streamed", [False, True])
def test_the_layer_rewrites_requests_to_a_tuned_name_only(streamed) -> None:
    app = RunPromptMiddleware(_echo_app(streamed), {"tuned": RECIPE})

    def reply_text(r):
        if not streamed:
            return r.json()["choices"][0]["message"]["content"]
        return "".join(json.loads(e[6:])["choices"][0]["delta"]["content"]
                       for e in r.text.split("\n\n") if e.startswith("data: {"))

    text = reply_text(_post(app, {"model": "tuned", "messages": [USER], "stream": streamed}))
    assert text.startswith("<reasoning>\n")
    got = json.loads(text[len("<reasoning>\n"):])
    assert got["messages"] == RECIPE.messages("2+2?") and got["continue_final_message"] is True
    base = {"model": "base", "messages": [USER], "stream": streamed}
    assert json.loads(reply_text(_post(app, base))) == base  # another name: untouched
    text_request = {"model": "tuned", "prompt": "x"}
    assert json.loads(reply_text(_post(app, text_request, "/v1/completions"))) == text_request  # raw text: untouched


def test_a_turn_after_tool_results_gets_no_prefix() -> None:
    """The prefix opens the reply to a question; after a tool's result the model goes on from it, as in training."""
    call = {"id": "c", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
    messages = [USER, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c", "content": "4"}]
    out, prefix = apply_recipe({"messages": messages}, RECIPE)
    assert out["messages"][-1]["role"] == "tool" and prefix == "" and "continue_final_message" not in out
    assert roles_and_contents(out)[0] == ("system", RECIPE.system_prompt)  # the rest of the recipe still applies
