"""Dynamic sampling (DAPO, Yu et al. 2025, arXiv:2503.14476, section 3.2): a step trains on
``prompts_per_step`` groups whose rewards differ, drawing more prompts while it has fewer.

A group whose G completions all got the same reward has advantage 0 everywhere: it only dilutes the
batch. With ``algo.dynamic_sampling`` the driver keeps the informative groups of the step's
generation, and while it has fewer than B draws B more prompts from the data cursor, generates and
scores them, up to ``algo.dynamic_sampling_max_rounds`` extra rounds (verl's
``algorithm.filter_groups.max_num_gen_batches``; OpenRLHF's ``dynamic_filtering``). It trains on the
first B informative groups in the order they were drawn. If the rounds run out first, uninformative
groups fill the batch with their loss masked out, so every learner still gets its rows (the same
update ``algo.drop_zero_std_groups`` makes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from grpo_ray.algo import zero_std_group_mask
from grpo_ray.rewards.scorer import ScoreResult, merge_score_results
from grpo_ray.run.batch import combined_rewards
from grpo_ray.wire import RolloutBatch


@dataclass
class Scored:
    rows: list[dict[str, Any]]  # B prompts' data rows
    rollouts: RolloutBatch
    scores: ScoreResult

    def informative(self) -> list[bool]:
        """[B] whether each group's rewards differ."""
        g = self.rollouts.group_size
        return zero_std_group_mask(combined_rewards(self.scores), g).view(-1, g)[:, 0].tolist()


def select_groups(parts: list[tuple[Scored, int]]) -> Scored:
    """The groups named by (part, group index), in that order, as one batch."""
    g = parts[0][0].rollouts.group_size
    rows, rollouts, scores = [], [], []
    for part, i in parts:
        r = part.rollouts
        span = slice(i * g, (i + 1) * g)
        rows.append(part.rows[i])
        rollouts.append(RolloutBatch(
            prompt_ids=[r.prompt_ids[i]], completion_ids=r.completion_ids[span], completion_texts=r.completion_texts[span],
            sampling_logprobs=r.sampling_logprobs[span], finish_reasons=r.finish_reasons[span], group_size=g,
            policy_version=r.policy_version, loss_mask=r.loss_mask[span] if r.loss_mask is not None else None,
            stats={},
        ))
        s = part.scores
        scores.append(ScoreResult(s.rewards[span], s.names, s.weights, {}, [], {}, s.specs))
    batch = RolloutBatch.concat(rollouts)
    firsts = {id(p): p for p, _ in parts}.values()
    batch.stats = RolloutBatch.concat([p.rollouts for p in firsts]).stats
    merged = merge_score_results(scores)
    merged.failures = merge_score_results([p.scores for p in firsts]).failures
    merged.new_errors = [e for p in firsts for e in p.scores.new_errors]
    return Scored(rows, batch, merged)


def fill_informative(first: Scored, more: Callable[[int], Scored], max_rounds: int) -> tuple[Scored, list[bool], dict[str, float]]:
    """B informative groups (or as many as ``max_rounds`` extra rounds of ``more(round)`` find, the rest
    filled with uninformative ones). Returns the batch, which of its groups are in the loss, and metrics."""
    b = len(first.rows)
    rounds = [first]
    kept = [(first, i) for i, ok in enumerate(first.informative()) if ok]
    while len(kept) < b and len(rounds) <= max_rounds:
        part = more(len(rounds))
        rounds.append(part)
        kept += [(part, i) for i, ok in enumerate(part.informative()) if ok]
    in_loss = [True] * min(len(kept), b)
    chosen = kept[:b]
    if len(chosen) < b:  # out of rounds: fill with groups that carry no signal, outside the loss
        fillers = [(p, i) for p in rounds for i, ok in enumerate(p.informative()) if not ok]
        chosen += fillers[: b - len(chosen)]
        in_loss += [False] * (b - len(in_loss))
    metrics = {
        "sampling/rounds": float(len(rounds)),
        "sampling/prompts_drawn": float(b * len(rounds)),
        "sampling/informative_groups": float(len(kept)),
    }
    return select_groups(chosen), in_loss, metrics


def group_loss_mask(in_loss: list[bool], group_size: int) -> torch.Tensor:
    return torch.tensor(in_loss, dtype=torch.bool).repeat_interleave(group_size)
