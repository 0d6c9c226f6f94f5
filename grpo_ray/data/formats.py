"""The response format grpo_ray teaches: tag styles and their default system prompts.

Two styles: ``reasoning`` (``<reasoning>…</reasoning>``, used by the GSM8K and medical recipes)
and ``thinking`` (``<thinking>…</thinking>``, whose prompt asks for the reasoning as a single
paragraph). Both close with ``<answer>…</answer>``. Data loaders use the system prompt; reward
functions use the tag names. Nothing here imports anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TagStyle:
    name: str
    reasoning_tag: str
    answer_tag: str
    system_prompt: str

    @property
    def reasoning_open(self) -> str:
        return f"<{self.reasoning_tag}>"

    @property
    def reasoning_close(self) -> str:
        return f"</{self.reasoning_tag}>"

    @property
    def answer_open(self) -> str:
        return f"<{self.answer_tag}>"

    @property
    def answer_close(self) -> str:
        return f"</{self.answer_tag}>"

    def render(self, reasoning: str, answer: str) -> str:
        """The completion a perfectly formatted model would write (used for SFT warm-up data)."""
        return (
            f"{self.reasoning_open}\n{reasoning}\n{self.reasoning_close}\n"
            f"{self.answer_open}\n{answer}\n{self.answer_close}\n"
        )


# The last sentence ("You must put your reasoning between ...") is an addition to the usual
# format prompt: it lifts an instruct model's format-following before any RL, so we keep it.
_REASONING_PROMPT = """Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>
You must put your reasoning between the <reasoning> tags and answer between the <answer> tags."""

_THINKING_PROMPT = """Respond in the following format and make sure the entire response is wrapped in <thinking> and <answer> tags with no other text outside of these tags:
<thinking>
your reasoning goes here and do not use newlines so that the entire reasoning becomes a single paragraph
</thinking>
<answer>
your answer goes here
</answer>"""

TAG_STYLES: dict[str, TagStyle] = {
    "reasoning": TagStyle("reasoning", "reasoning", "answer", _REASONING_PROMPT),
    "thinking": TagStyle("thinking", "thinking", "answer", _THINKING_PROMPT),
}


def get_tag_style(name: str) -> TagStyle:
    try:
        return TAG_STYLES[name]
    except KeyError:
        raise ValueError(f"unknown tag_style {name!r}; known: {', '.join(TAG_STYLES)}") from None
