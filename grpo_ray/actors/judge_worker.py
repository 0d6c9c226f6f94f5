"""JudgeWorker: a causal LM in a Ray actor of its own that answers yes or no, for ``lm_judge`` rewards.

Thin over :class:`LMJudge` (a plain class, usable without Ray). The model loads in the constructor
(on the actor's GPU when ``reward.judge.num_gpus`` gives it one, else on CPU) and runs one warm-up
forward pass, so ``ready()`` returning means the first real call pays no load. The cluster creates it
with ``max_restarts`` and one task retry: a judge killed mid-call is restarted by Ray, loads again and
answers the retried call (the reward's own ``timeout_s`` bounds that wait).

For a batch of questions, each is wrapped in the tokenizer's chat template as one user turn (plain
text plus ``"\\nAnswer:"`` for a model without one), left-padded, and the reward is
:func:`grpo_ray.rewards.judge.p_yes` of the next-token logits of the yes and no spellings.
"""

from __future__ import annotations

from typing import Any, Sequence

import ray

from grpo_ray.rewards.judge import NO_WORDS, YES_WORDS, p_yes

__all__ = ["JudgeWorker", "LMJudge", "attach_judge", "judge_bundle", "start_judge"]


def _first_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """The first token of each spelling (a word split into pieces is judged by its first piece)."""
    encoded = [tokenizer.encode(w, add_special_tokens=False) for w in words]
    return sorted({ids[0] for ids in encoded if ids})


class LMJudge:
    """A causal LM that scores questions by P(yes); see the module docstring.

    Args:
        model: a ``builtin:`` model, a local folder or a hub id.
        dtype: ``auto`` (bfloat16 on a GPU, float32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
        batch_size: questions per forward pass.
        max_tokens: longest question in tokens; a longer one keeps its end (where the question is asked).
    """

    def __init__(self, model: str, dtype: str = "auto", batch_size: int = 16, max_tokens: int = 1024) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from grpo_ray.models.paths import resolve_model_path

        self.path = resolve_model_path(model)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # Ray hides GPUs the actor was not given
        if dtype == "auto":
            dtype = "bfloat16" if self.device == "cuda" else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.tokenizer.padding_side, self.tokenizer.truncation_side = "left", "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.batch_size, self.max_tokens = batch_size, max_tokens
        yes, no = _first_token_ids(self.tokenizer, YES_WORDS), _first_token_ids(self.tokenizer, NO_WORDS)
        # a piece both words start with (a lone space in a small vocabulary) says nothing: left out
        self.yes_ids, self.no_ids = sorted(set(yes) - set(no)), sorted(set(no) - set(yes))
        if not self.yes_ids or not self.no_ids:
            raise ValueError(
                f"reward.judge.model={model!r}: its tokenizer does not give 'yes' and 'no' distinct first tokens "
                f"(yes {yes}, no {no}); choose a model whose vocabulary has both words"
            )
        self.p_yes(["Is this a warm-up question? Answer yes or no."])  # allocations and kernels, before step 1

    def ready(self) -> dict[str, Any]:
        """What the judge runs: model path, device, dtype and the yes/no token ids."""
        return {"model": self.path, "device": self.device, "dtype": str(self.model.dtype),
                "yes_ids": self.yes_ids, "no_ids": self.no_ids}

    def _wrap(self, question: str) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
        return question + "\nAnswer:"

    def p_yes(self, questions: Sequence[str]) -> list[float]:
        """P(yes | yes or no) for each question, in order."""
        import torch

        out: list[float] = []
        for start in range(0, len(questions), self.batch_size):
            texts = [self._wrap(q) for q in questions[start : start + self.batch_size]]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_tokens,
                                 add_special_tokens=False).to(self.device)
            mask = enc["attention_mask"]
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens count from 0
            with torch.inference_mode():
                logits = self.model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions).logits
            last = logits[:, -1, :].float()  # [b, V]: the next token after each question
            out += p_yes(last[:, self.yes_ids].tolist(), last[:, self.no_ids].tolist())
        return out


JudgeWorker = ray.remote(LMJudge)


def judge_bundle(cfg: Any) -> dict[str, float]:
    """The judge actor's resources (a bundle of the reward role's placement group)."""
    j = cfg.reward.judge
    return {"CPU": j.num_cpus, "GPU": j.num_gpus, **cfg.reward.resources}


def start_judge(cfg: Any, scheduling_strategy: Any = None) -> Any:
    """Create the run's judge actor from ``cfg.reward.judge``; its model loads as it starts."""
    j = cfg.reward.judge
    return JudgeWorker.options(
        num_cpus=j.num_cpus, num_gpus=j.num_gpus, resources=dict(cfg.reward.resources),
        max_restarts=j.max_restarts, max_task_retries=1 if j.max_restarts else 0, scheduling_strategy=scheduling_strategy,
    ).remote(j.model, j.dtype, j.batch_size, j.max_tokens)


def attach_judge(specs: Sequence[dict[str, Any]], judge: Any) -> list[dict[str, Any]]:
    """Resolved reward specs with ``kwargs["judge"]`` set for the functions that score with the judge."""
    from grpo_ray.rewards.registry import REWARDS

    out = []
    for spec in specs:
        if REWARDS.traits(spec["fn"]).judge:
            spec = {**spec, "kwargs": {**(spec.get("kwargs") or {}), "judge": judge}}
        out.append(spec)
    return out
