"""Reading completions and golds: the text helpers every reward function shares.

A completion arrives either as a string or as chat messages (``[{"role": "assistant",
"content": ...}]``), as TRL passes them; :func:`completion_text` turns both into the text the
rewards look at. Answer extraction reads answers as the GSM8K reference run's rewards did (see
docs/training.md), so reward numbers stay comparable with its table.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence, Union

from grpo_ray.data.formats import TagStyle, get_tag_style

Message = Mapping[str, Any]
Completion = Union[str, Sequence[Message]]

# A digit-group comma, as in "1,080" (GSM8K golds have 93 of them across train and test).
_DIGIT_GROUP_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# Soft correctness's number: an optional $, digits with thousands commas, an optional %, and an
# optional leading minus (see first_number).
_FIRST_NUMBER = re.compile(r"(-?)[$]?(\d+(?:,\d+)*)%?")


def resolve_tag_style(tag_style: str | TagStyle) -> TagStyle:
    """A :class:`TagStyle` from its name (``"reasoning"`` or ``"thinking"``) or itself."""
    return tag_style if isinstance(tag_style, TagStyle) else get_tag_style(tag_style)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Multimodal-style content: a list of parts such as {"type": "text", "text": "..."}.
    if isinstance(content, Sequence):
        return "".join(
            part.get("text") or "" if isinstance(part, Mapping) else str(part) for part in content
        )
    return str(content)


def completion_text(completion: Completion) -> str:
    """The text of one completion, whether a string or a list of chat messages.

    For messages, the last message whose role is ``assistant`` is used (with tool calls a
    completion may hold several turns; the last one carries the answer). Messages without any
    ``assistant`` role, such as ``[{"content": text}]``, give their first message's content
    (``completion[0]["content"]``, how reward functions written for TRL often read them).

    >>> completion_text("<answer>\\n4\\n</answer>")
    '<answer>\\n4\\n</answer>'
    >>> completion_text([{"role": "assistant", "content": "4"}])
    '4'
    >>> completion_text([{"content": "no roles"}])
    'no roles'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):  # a single message
        return _content_text(completion.get("content"))
    if completion is None or len(completion) == 0:
        return ""
    for message in reversed(completion):
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return _content_text(message.get("content"))
    first = completion[0]
    return _content_text(first.get("content") if isinstance(first, Mapping) else first)


def extract_xml_answer(text: str, tag_style: str | TagStyle = "reasoning") -> str:
    """The text after the last ``<answer>`` and before the next ``</answer>``, stripped.

    A missing opening tag means the text from the start, a missing closing tag the text to the
    end, so a completion with no tags at all is its own answer (the reference run's reading).

    >>> extract_xml_answer("<reasoning>\\n6*7\\n</reasoning>\\n<answer>\\n42\\n</answer>\\n")
    '42'
    >>> extract_xml_answer("just 42 ")
    'just 42'
    """
    style = resolve_tag_style(tag_style)
    answer = text.split(style.answer_open)[-1]
    answer = answer.split(style.answer_close)[0]
    return answer.strip()


def extract_reasoning(text: str, tag_style: str | TagStyle = "reasoning") -> str | None:
    """The text inside the first reasoning block, stripped; None when either tag is missing.

    >>> extract_reasoning("<thinking>\\nadd them\\n</thinking>", "thinking")
    'add them'
    """
    style = resolve_tag_style(tag_style)
    start = text.find(style.reasoning_open)
    if start < 0:
        return None
    start += len(style.reasoning_open)
    end = text.find(style.reasoning_close, start)
    if end < 0:
        return None
    return text[start:end].strip()


def remove_digit_group_commas(text: str) -> str:
    """``"1,080"`` -> ``"1080"``; commas that are not thousands separators stay.

    >>> remove_digit_group_commas("1,450,000 and 3, 4")
    '1450000 and 3, 4'
    """
    return _DIGIT_GROUP_COMMA.sub("", text)


def extract_hash_answer(text: str) -> str | None:
    """A GSM8K gold: the text after ``####``, stripped, with thousands commas removed.

    ``text.split("####")[1].strip()`` alone would keep golds such as ``1,080`` (79 in GSM8K
    train, 14 in test), which a model answering ``1080`` could then never match, so digit-group
    commas are dropped too. None when there is no ``####``.

    >>> extract_hash_answer("3 + 4 = <<3+4=7>>7 apples.\\n#### 7")
    '7'
    >>> extract_hash_answer("#### 1,080")
    '1080'
    >>> extract_hash_answer("no marker") is None
    True
    """
    if "####" not in text:
        return None
    return remove_digit_group_commas(text.split("####")[1].strip())


def normalize_gold(gold: Any) -> str | None:
    """The gold answer rewards compare with, or None when the row has none.

    A raw GSM8K solution (containing ``####``) gives what follows the marker; anything else is
    used stripped. Digit-group commas are removed either way, so the loader may pass raw or
    pre-extracted golds.

    >>> normalize_gold("so 5 in all\\n#### 5"), normalize_gold(" 1,080 "), normalize_gold("")
    ('5', '1080', None)
    """
    if gold is None:
        return None
    text = str(gold)
    extracted = extract_hash_answer(text)
    text = extracted if extracted is not None else remove_digit_group_commas(text.strip())
    return text or None


def first_number(answer: str) -> str:
    """The first number in an answer, as soft correctness reads it.

    ``$``, thousands commas and ``%`` are dropped; ``"0"`` when there is no number. A leading
    ``-`` is kept: the reference run's pattern, ``[$]?(\\d+(?:,\\d+)*)%?``, could never equal a
    negative gold (GSM8K test has some, e.g. ``-10``) and read ``-10`` as ``10``, matching a
    gold of ``10``.

    >>> first_number("$1,000"), first_number("72 units"), first_number("96%"), first_number("-$3")
    ('1000', '72', '96', '-3')
    >>> first_number("none")
    '0'
    """
    matched = _FIRST_NUMBER.search(answer)
    if not matched:
        return "0"
    return matched.group(1) + matched.group(2).replace(",", "")


def column(values: Any, name: str, n: int, reward: str) -> Sequence[Any]:
    """Check a dataset column passed as a kwarg has one value per completion."""
    if values is None:
        raise ValueError(
            f"reward {reward!r} needs the column {name!r}, one value per completion; "
            f"add it to the dataset or pass {name}=[...]"
        )
    if isinstance(values, str) or len(values) != n:
        got = "a string" if isinstance(values, str) else f"{len(values)} values"
        raise ValueError(f"reward {reward!r}: column {name!r} has {got} for {n} completions")
    return values
