"""Prompt building: records (question, answer, ...) -> TRL's conversational prompt format.

A prompt is ``[{"role": "system", "content": ...}, {"role": "user", "content": question}]``.
The answer is never part of it: it stays in its own column, which TRL and grpo_ray's reward
functions receive as a keyword argument.
"""

from __future__ import annotations

import datasets

from grpo_ray.formats import get_tag_style


def resolve_system_prompt(system_prompt: str | None, tag_style: str, instruction: str = "") -> str:
    """The system prompt to use: ``system_prompt`` verbatim when given, otherwise the tag style's
    default followed by a dataset's ``instruction`` line (e.g. PubMedQA's "yes, no or maybe")."""
    if system_prompt is not None:
        return system_prompt
    default = get_tag_style(tag_style).system_prompt
    return f"{default}\n{instruction}" if instruction else default


def build_prompt(system_prompt: str, question: str) -> list[dict[str, str]]:
    """A chat prompt: system message (omitted when ``system_prompt`` is empty) then the question.

    >>> build_prompt("Be brief.", "2 + 2?")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': '2 + 2?'}]
    """
    # An empty system prompt means none: some chat templates (e.g. Gemma's) reject the system role.
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": question}]


def attach_prompts(
    records: datasets.Dataset, system_prompt: str, question_column: str = "question"
) -> datasets.Dataset:
    """``records`` plus a ``prompt`` column built from ``question_column``; other columns kept."""
    return records.map(
        lambda row: {"prompt": build_prompt(system_prompt, row[question_column])},
        desc="building prompts",
    )
