"""Tool calls in the model's own format, on the built-in tokenizer: with a template that has no tools
(the Hermes format described in the system message) and with Qwen2.5's template (tools rendered by
the template); in both, the tokens appended after a call are what the template puts there."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpo_ray.models.paths import resolve_model_path
from grpo_ray.rollout.tool_calls import ToolCallFormat, template_supports_tools
from grpo_ray.tools import resolve_tool

pytestmark = pytest.mark.unit

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "3 * 12"}}\n</tool_call>'
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 3 * 12?"}]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path("builtin:arithmetic-base"))


@pytest.fixture(scope="module")
def qwen_tokenizer(tokenizer):
    import copy

    trl = pytest.importorskip("trl")
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    return tok


@pytest.fixture(scope="module")
def schemas():
    return [resolve_tool("calculator").schema]


def test_without_template_tools_the_format_is_described_in_the_system_message(tokenizer, schemas) -> None:
    fmt = ToolCallFormat(tokenizer, schemas)
    assert not fmt.native and fmt.parser_name == "hermes"
    text = tokenizer.decode(fmt.encode_prompt(PROMPT))
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou can call these tools:\n<tools>\n")
    assert '"name": "calculator"' in text and text.endswith("<|im_start|>assistant\n")


def test_calls_are_parsed_and_garbled_ones_counted(tokenizer, schemas) -> None:
    fmt = ToolCallFormat(tokenizer, schemas)
    turn = fmt.parse("Let me compute.\n" + CALL)
    assert [(c.name, c.arguments) for c in turn.calls] == [("calculator", {"expression": "3 * 12"})]
    assert turn.content.strip() == "Let me compute." and not turn.malformed
    assert fmt.parse('<tool_call>{"name": calculator}</tool_call>').malformed
    plain = fmt.parse("<answer>36</answer>")
    assert not plain.calls and not plain.malformed
    message = fmt.assistant_message(turn, CALL)
    assert message["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "3 * 12"}}


@pytest.mark.parametrize("native", [False, True], ids=["hermes-in-system", "qwen2.5-template"])
def test_the_tokens_after_a_call_are_what_the_template_renders(tokenizer, qwen_tokenizer, schemas, native) -> None:
    tok = qwen_tokenizer if native else tokenizer
    fmt = ToolCallFormat(tok, schemas)
    assert fmt.native == native == template_supports_tools(tok)
    prompt = fmt.encode_prompt(PROMPT)
    turn_ids = tok.encode(CALL, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    suffix = fmt.result_ids(fmt.parse(CALL), CALL, [("calculator", "36")])
    # the whole conversation rendered at once gives the same tokens as the pieces appended (with the
    # template's tools, the call as the template writes it: the same text the model sampled here)
    parsed = fmt.parse(CALL)
    assistant = ({"role": "assistant", "content": parsed.content, "tool_calls": fmt.assistant_message(parsed, CALL)["tool_calls"]}
                 if native else {"role": "assistant", "content": CALL})
    conversation = fmt.prompt_messages(PROMPT) + [assistant, {"role": "tool", "name": "calculator", "content": "36"}]
    whole = fmt._render(conversation, add_generation_prompt=True)
    assert prompt + turn_ids + suffix == whole
    expected = "<tool_response>\n36\n</tool_response>" if native else "<|im_start|>tool\n36<|im_end|>"
    assert expected in tok.decode(suffix) and tok.decode(suffix).endswith("<|im_start|>assistant\n")
    if native:
        assert "<tools>" in tok.decode(prompt) and "You can call these tools" not in tok.decode(prompt)
