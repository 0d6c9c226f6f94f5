"""Tool calls in the model's own format: the tools shown in the prompt, calls parsed out of what the
model wrote, and the tokens of the tool results appended after its turn.

Two cases, by the tokenizer's chat template:

- the template renders tools (Qwen2.5, Llama-3.1, ...): the prompt gets ``tools=`` (the JSON schemas),
  and the model's turn is parsed with vLLM's own parser for that format (``hermes`` for
  ``<tool_call>{...}</tool_call>``, ``llama3_json`` for Llama's JSON calls);
- it does not (SmolLM2): the Hermes format is described at the end of the system message, with the
  schemas inside ``<tools>...</tools>``, and parsed with vLLM's ``hermes`` parser; results come back as
  ``tool`` turns, which such templates render as any other role. A demonstration turn in the prompt
  (``data.demonstrations``) teaches the format.

Token in, token out: a trajectory is never rendered to text and tokenized again. After a turn that
ends with a call, :meth:`ToolCallFormat.result_ids` gives exactly the tokens the template puts after
that turn's end-of-turn token: the tool turn(s) and the next assistant header. They are found by
rendering a stand-in conversation with and without the tool turns, as TRL does, which holds for every
template that renders earlier turns the same whatever follows them.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

# appended to the system message when the template has no tools of its own (the Hermes format)
HERMES_INSTRUCTIONS = """

You can call these tools:
<tools>
{tools}
</tools>
To call a tool, write its name and arguments as JSON between tool-call tags, then stop:
<tool_call>
{"name": "<tool name>", "arguments": {"<argument>": <value>}}
</tool_call>
Its result comes back in a tool message."""

_CALL_TAG = re.compile(r"<tool_call>|\{\s*\"name\"\s*:", re.S)


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class ParsedTurn:
    """What one sampled turn says: its text before any call, its calls, and whether a call was garbled."""

    content: str
    calls: list[ToolCall] = field(default_factory=list)
    malformed: bool = False  # the turn tried to call (a tag or a call-shaped JSON) but no call could be read


def template_supports_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a ``tools`` list."""
    from transformers.utils.chat_template_utils import _get_template_variables

    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    try:
        return bool(template) and "tools" in _get_template_variables(template)
    except Exception:  # noqa: BLE001 - an unparsable template renders no tools
        return False


def default_parser(tokenizer) -> str:
    """vLLM's parser for the tokenizer's call format: Llama-3's JSON calls where its template has an
    ``ipython`` role, else Hermes."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    if "ipython" in template and "<|python_tag|>" in tokenizer.get_vocab():
        return "llama3_json"
    return "hermes"


class ToolCallFormat:
    """``schemas``: the JSON schemas of the episode's tools; ``parser``: a vLLM tool-parser name or "auto"."""

    def __init__(self, tokenizer, schemas: list[dict[str, Any]], parser: str = "auto",
                 instructions: "str | None" = None) -> None:
        self.tokenizer, self.schemas = tokenizer, list(schemas)
        self.instructions = HERMES_INSTRUCTIONS if instructions is None else instructions
        self.native = template_supports_tools(tokenizer)
        self.parser_name = default_parser(tokenizer) if parser == "auto" else parser
        self.parser = tool_parser_class(self.parser_name)(tokenizer)
        # a garbled call is the model's mistake, counted as such; vLLM's parser would log a traceback each time
        logging.getLogger(type(self.parser).__module__).setLevel(logging.CRITICAL)
        self.eos_ids = _end_of_turn_ids(tokenizer)

    # -- prompts ----------------------------------------------------------------------------------
    def prompt_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The prompt's messages with the tools described, where the template does not do it itself."""
        if self.native or not self.schemas or not self.instructions:
            return list(messages)
        text = self.instructions.replace("{tools}", "\n".join(json.dumps(s) for s in self.schemas))
        if messages and messages[0].get("role") == "system":
            return [{**messages[0], "content": str(messages[0].get("content") or "") + text}, *messages[1:]]
        return [{"role": "system", "content": text.lstrip()}, *messages]

    def encode_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of the prompt with the tools shown, ready for the assistant's first turn (an
        assistant prefix the prompt ends with is continued)."""
        messages = self.prompt_messages(messages)
        partial = bool(messages) and messages[-1]["role"] == "assistant"
        return self._render(messages, add_generation_prompt=not partial, continue_final_message=partial)

    # -- the model's turns ------------------------------------------------------------------------
    def parse(self, text: str) -> ParsedTurn:
        """The calls in one sampled turn (its text decoded with special tokens, end-of-turn removed)."""
        info = self.parser.extract_tool_calls(text, request=None)
        calls = []
        for call in info.tool_calls if info.tools_called else []:
            try:
                arguments = json.loads(call.function.arguments) if call.function.arguments else {}
            except ValueError:
                return ParsedTurn(text, [], malformed=True)
            if not isinstance(arguments, dict):
                return ParsedTurn(text, [], malformed=True)
            calls.append(ToolCall(call.function.name, arguments, call.id or ""))
        if not calls:
            return ParsedTurn(text, [], malformed=bool(_CALL_TAG.search(text)))
        return ParsedTurn(info.content or "", calls)

    def assistant_message(self, turn: ParsedTurn, text: str) -> dict[str, Any]:
        """The turn as a chat message: the text as written, and its calls as OpenAI's ``tool_calls``."""
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if turn.calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in turn.calls]
        return message

    def result_ids(self, turn: ParsedTurn, text: str, results: list[tuple[str, str]]) -> list[int]:
        """The tokens the template puts after a turn that called tools: one ``tool`` turn per
        (name, content) result, then the next assistant header."""
        assistant = self.assistant_message(turn, text) if self.native else {"role": "assistant", "content": text}
        base = [{"role": "user", "content": "."}, assistant]
        tool_turns = [{"role": "tool", "name": name, "content": content} for name, content in results]
        before = self._render(base, add_generation_prompt=False)
        after = self._render(base + tool_turns, add_generation_prompt=True)
        cut = max((i for i, t in enumerate(before) if t in self.eos_ids), default=None)
        if cut is None or after[: cut + 1] != before[: cut + 1]:
            raise ValueError("the chat template renders earlier turns differently once tool turns follow them, so tool "
                             "results cannot be appended token by token; use a template that keeps earlier turns as they are")
        return after[cut + 1:]

    def is_end_of_turn(self, token_id: int) -> bool:
        return token_id in self.eos_ids

    def _render(self, messages: list[dict[str, Any]], **kwargs) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, tools=self.schemas if self.native and self.schemas else None,
                                                 tokenize=True, return_dict=False, **kwargs)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)


def tool_parser_class(name: str) -> type:
    """A vLLM tool parser by its registered name (``hermes``, ``llama3_json``, ...), or a subclass of vLLM's
    ``ToolParser`` of your own as ``"path/to/file.py:Class"`` or ``"module:Class"`` (for a format vLLM
    does not parse)."""
    if ":" not in name:
        from vllm.tool_parsers import ToolParserManager

        try:
            return ToolParserManager.get_tool_parser(name)
        except KeyError:
            known = ", ".join(sorted(ToolParserManager.list_registered())[:12])
            raise ValueError(f"unknown tool parser {name!r}; vLLM has {known}, ...; or give 'file.py:Class'") from None
    from grpo_ray.rewards.registry import resolve_reward
    from vllm.tool_parsers.abstract_tool_parser import ToolParser

    cls = resolve_reward(name)  # the same loader as rewards and tools: file.py:Class or module:Class
    if not (isinstance(cls, type) and issubclass(cls, ToolParser)):
        raise ValueError(f"tool parser {name!r} is not a subclass of vLLM's ToolParser")
    return cls


def _end_of_turn_ids(tokenizer) -> set[int]:
    """The tokens that end an assistant turn: EOS, and the chat markers that templates close turns with."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
        if token in vocab:
            ids.add(vocab[token])
    return ids
