"""An LM judge as a reward: a causal LM is asked whether a completion's final answer is correct, and the
reward is its probability of answering yes.

The question is built here, in the reward worker; the model runs in the run's ``JudgeWorker`` actor
(:mod:`grpo_ray.actors.judge_worker`), which the cluster starts with its own CPUs or GPUs
(``reward.judge``) whenever ``reward.functions`` names ``lm_judge``, and hands to the function as
``judge=``. One batch is one actor call; the actor batches the forward passes itself. Importing this
module loads neither torch nor ray.

The judge's prompt is the function's ``judge_prompt`` kwarg, a template with ``{question}`` (the
prompt's last user message), ``{completion}`` and ``{answer}`` (the ``answer`` column, empty when there
is none). Its kwargs are named ``judge_*`` because dataset columns arrive as kwargs too (the arithmetic
set has a ``template`` column)::

    reward:
      functions:
        - {name: lm_judge, weight: 1.0, kwargs: {judge_prompt: "Q: {question}\\nA: {completion}\\nCorrect? yes or no"}}
      judge: {model: builtin:smollm2-135m-instruct, num_cpus: 1}
"""

from __future__ import annotations

import math
import string
from typing import Any, Sequence

from grpo_ray.rewards.parsing import Completion, completion_text
from grpo_ray.rewards.registry import REWARDS, resolve_reward

DEFAULT_TEMPLATE = (
    "Question:\n{question}\n\nReference answer: {answer}\n\nProposed solution:\n{completion}\n\n"
    "Is the final answer of the proposed solution correct? Answer yes or no."
)
PLACEHOLDERS = ("question", "completion", "answer")
YES_WORDS = ("yes", "Yes", " yes", " Yes", "YES")
NO_WORDS = ("no", "No", " no", " No", "NO")


def prompt_text(prompt: Any) -> str:
    """The question of a prompt: its last user message (chat prompts) or itself (strings).

    >>> prompt_text([{"role": "system", "content": "Think."}, {"role": "user", "content": "2+2?"}])
    '2+2?'
    """
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt or [] if m.get("role") == "user"]
    return completion_text([users[-1]]) if users else completion_text(prompt)


def check_template(template: str) -> None:
    """Raise a one-line ValueError for a template with a placeholder the judge cannot fill."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"reward 'lm_judge': judge_prompt {template[:60]!r} is not a format string ({e})") from None
    unknown = sorted(fields - set(PLACEHOLDERS))
    if unknown:
        raise ValueError(
            f"reward 'lm_judge': judge_prompt placeholders {unknown} are unknown; use {{question}}, {{completion}} and "
            f"{{answer}} (write {{{{ and }}}} for literal braces)"
        )


def judge_questions(
    prompts: Sequence[Any], completions: Sequence[Completion], answers: Sequence[Any] | None, template: str
) -> list[str]:
    """One question to the judge per completion.

    >>> judge_questions(["2+2?"], ["<answer>4</answer>"], ["4"], "{question} {answer} {completion}")
    ['2+2? 4 <answer>4</answer>']
    """
    check_template(template)
    answers = [None] * len(completions) if answers is None else answers
    return [
        template.format(question=prompt_text(p), completion=completion_text(c), answer="" if a is None else str(a))
        for p, c, a in zip(prompts, completions, answers)
    ]


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def p_yes(yes_logits: Sequence[Sequence[float]], no_logits: Sequence[Sequence[float]]) -> list[float]:
    """P(yes | yes or no) per row, from the next-token logits of the yes and the no tokens.

    Each row holds the logits of every spelling of yes (``yes``, `` Yes``...) and of no; the
    probability is the yes mass over the yes-or-no mass, so what the model gives to other tokens
    does not matter. Rows: B; columns: one per spelling.

    >>> p_yes([[0.0]], [[0.0]]), [round(p, 4) for p in p_yes([[0.0, 0.0]], [[0.0]])]  # two yes spellings: 2 / 3
    ([0.5], [0.6667])
    """
    out = []
    for yes, no in zip(yes_logits, no_logits):
        out.append(1.0 / (1.0 + math.exp(_logsumexp(no) - _logsumexp(yes))))
    return out


def uses_judge(names: Sequence[str]) -> bool:
    """Whether any of these reward specs scores with the judge actor (so the run must start one)."""
    return any(REWARDS.traits(resolve_reward(name)).judge for name in names)


@REWARDS.register("lm_judge", judge=True)
def lm_judge_reward(
    prompts: Sequence[Any],
    completions: Sequence[Completion],
    judge: Any = None,
    judge_prompt: str = DEFAULT_TEMPLATE,
    answer: Sequence[Any] | None = None,
    judge_timeout_s: float = 300.0,
    **kwargs: Any,
) -> list[float]:
    """The judge's P(yes) that each completion's final answer is correct, in [0, 1].

    ``judge`` is the run's ``JudgeWorker`` handle (the cluster passes it) or any object with
    ``p_yes(texts) -> list[float]``; ``judge_timeout_s`` bounds the wait for the actor, so a call that
    outlives ``reward.timeout_s`` still ends; ``judge_prompt`` is the question's template.

    >>> class Judge:  # a stand-in: the real one runs a causal LM
    ...     def p_yes(self, texts):
    ...         return [0.9 if "answer>4<" in t else 0.2 for t in texts]
    >>> lm_judge_reward(["2+2?", "2+2?"], ["<answer>4</answer>", "<answer>5</answer>"], judge=Judge(), answer=["4", "4"])
    [0.9, 0.2]
    """
    if judge is None:
        raise ValueError(
            "reward 'lm_judge' needs the run's judge actor as judge=...; the cluster passes it when "
            "reward.functions names lm_judge (a module:function wrapper of it gets none)"
        )
    texts = judge_questions(prompts, completions, answer, judge_prompt)
    call = judge.p_yes
    if hasattr(call, "remote"):  # a Ray actor handle
        import ray

        return list(ray.get(call.remote(texts), timeout=judge_timeout_s))
    return list(call(texts))


def _wait_for_judge(judge: Any = None, judge_prompt: str = DEFAULT_TEMPLATE, judge_timeout_s: float = 300.0) -> None:
    """Warm-up: the judge's model has loaded (its first call would otherwise wait for it)."""
    check_template(judge_prompt)
    if judge is not None and hasattr(judge.p_yes, "remote"):
        import ray

        ray.get(judge.ready.remote())


lm_judge_reward.warmup = _wait_for_judge  # type: ignore[attr-defined]
