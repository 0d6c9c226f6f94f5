"""Prompt building: records (question, answer, ...) -> TRL's conversational prompt format.

A prompt is ``[{"role": "system", "content": ...}, {"role": "user", "content": question}]``, built
by a :class:`PromptRecipe`. A recipe may also put worked demonstrations before the question (earlier
user/assistant turns) and start the assistant's reply with a prefix: a trailing, unfinished
assistant message, which the chat template continues instead of opening a new turn (TRL's
``continue_final_message`` convention). The model generates only what follows the prefix, so
rewards must see prefix + completion (:func:`with_assistant_prefix`), as TRL's GRPOTrainer does.

The answer is never part of a prompt: it stays in its own column, which TRL and grpo_ray's reward
functions receive as a keyword argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import datasets

from grpo_ray.data.formats import get_tag_style


def resolve_system_prompt(system_prompt: str | None, tag_style: str, instruction: str = "") -> str:
    """The system prompt to use: ``system_prompt`` verbatim when given, otherwise the tag style's
    default followed by a dataset's ``instruction`` line (e.g. PubMedQA's "yes, no or maybe")."""
    if system_prompt is not None:
        return system_prompt
    default = get_tag_style(tag_style).system_prompt
    return f"{default}\n{instruction}" if instruction else default


@dataclass(frozen=True)
class PromptRecipe:
    """How a question becomes chat messages.

    system_prompt: the system message; "" means none (some chat templates, e.g. Gemma's, reject
        the system role).
    demonstrations: (question, reply) pairs shown first as earlier user/assistant turns, each
        reply written in the format the rewards ask for (few-shot in chat form). A third element,
        ((tool name, arguments, result), ...), shows tool calls first: an assistant turn per call in
        the Hermes format and the tool's result as a ``tool`` turn, then the reply
        (:func:`demonstration_turns`).
    assistant_prefix: text the assistant's reply starts with; the model continues it.

    >>> PromptRecipe("S", (("1+1?", "2"),), "<r>").messages("2+2?")  # doctest: +NORMALIZE_WHITESPACE
    [{'role': 'system', 'content': 'S'}, {'role': 'user', 'content': '1+1?'},
     {'role': 'assistant', 'content': '2'}, {'role': 'user', 'content': '2+2?'},
     {'role': 'assistant', 'content': '<r>'}]
    """

    system_prompt: str = ""
    demonstrations: tuple[tuple, ...] = ()
    assistant_prefix: str = ""

    def messages(self, question: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        shots = [message for demo in self.demonstrations for message in demonstration_turns(demo)]
        prefix = [{"role": "assistant", "content": self.assistant_prefix}] if self.assistant_prefix else []
        return [*system, *shots, {"role": "user", "content": question}, *prefix]


def demonstration_turns(demo: tuple) -> list[dict[str, str]]:
    """A demonstration's chat turns: the question, then for each (tool name, arguments, result) of its
    optional third element an assistant turn calling the tool (Hermes format) and the tool's turn, then
    the reply.

    >>> [m["role"] for m in demonstration_turns(("3 * 12?", "36", (("calculator", {"expression": "3 * 12"}, "36"),)))]
    ['user', 'assistant', 'tool', 'assistant']
    """
    import json

    question, reply, calls = demo[0], demo[1], (demo[2] if len(demo) > 2 else ())
    turns = [{"role": "user", "content": question}]
    for name, arguments, result in calls:
        call = json.dumps({"name": name, "arguments": arguments})
        turns += [{"role": "assistant", "content": f"<tool_call>\n{call}\n</tool_call>"},
                  {"role": "tool", "content": str(result)}]
    return turns + [{"role": "assistant", "content": reply}]


def build_prompt(system_prompt: str, question: str) -> list[dict[str, str]]:
    """A chat prompt: system message (omitted when ``system_prompt`` is empty) then the question.

    >>> build_prompt("Be brief.", "2 + 2?")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': '2 + 2?'}]
    """
    return PromptRecipe(system_prompt).messages(question)


def assistant_prefix(prompt: Sequence[Mapping[str, str]]) -> str:
    """The start of the reply a prompt ends with (its trailing assistant message), or "".

    >>> assistant_prefix([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<r>"}])
    '<r>'
    """
    return prompt[-1]["content"] if prompt and prompt[-1]["role"] == "assistant" else ""


def question_of(prompt: Sequence[Mapping[str, str]]) -> str:
    """The question a prompt asks: its last user message (demonstrations and a prefix come around it).

    >>> question_of([{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
    ...              {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<r>"}])
    '2+2?'
    """
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


def with_assistant_prefix(prompts: Sequence[Sequence[Mapping[str, str]]], texts: Sequence[str]) -> list[str]:
    """Each generated text preceded by the assistant prefix its prompt ends with: the whole reply,
    which is what rewards and evaluation score. ``prompts[i]`` is the prompt of ``texts[i]``.

    >>> with_assistant_prefix([[{"role": "assistant", "content": "<r>\\n"}], [{"role": "user", "content": "Q"}]],
    ...                       ["2+2=4", "4"])
    ['<r>\\n2+2=4', '4']
    """
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts for {len(texts)} completions: pass one prompt per completion")
    return [assistant_prefix(prompt) + text for prompt, text in zip(prompts, texts)]


def attach_prompts(
    records: datasets.Dataset, recipe: PromptRecipe | str, question_column: str = "question"
) -> datasets.Dataset:
    """``records`` plus a ``prompt`` column built from ``question_column`` by ``recipe`` (a
    system prompt alone may be passed as a string); other columns kept."""
    recipe = PromptRecipe(recipe) if isinstance(recipe, str) else recipe
    return records.map(lambda row: {"prompt": recipe.messages(row[question_column])}, desc="building prompts")
