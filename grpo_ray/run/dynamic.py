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


def concat_scored(parts: list[Scored]) -> Scored:
    """Several rounds' groups as one batch, in order."""
    rollouts = RolloutBatch.concat([p.rollouts for p in parts])
    for key in ("generate_s", "load_weights_s"):  # rounds run one after another: their times add up
        if any(key in p.rollouts.stats for p in parts):
            rollouts.stats[key] = sum(p.rollouts.stats.get(key, 0.0) for p in parts)
    return Scored([r for p in parts for r in p.rows], rollouts, merge_score_results([p.scores for p in parts]))


def select_groups(parts: list[tuple[Scored, int]]) -> Scored:
    """The groups named by (part, group index), in that order, as one batch. Its stats, failures and new
    reward errors are those of every part drawn (the work the step did)."""
    g = parts[0][0].rollouts.group_size
    rows, rollouts, scores = [], [], []
    for part, i in parts:
        span = slice(i * g, (i + 1) * g)
        rows.append(part.rows[i])
        rollouts.append(part.rollouts.select_groups([i]))
        s = part.scores
        scores.append(ScoreResult(s.rewards[span], s.names, s.weights, {}, [], {}, s.specs))
    batch = RolloutBatch.concat(rollouts)
    drawn = concat_scored(list({id(p): p for p, _ in parts}.values()))
    batch.stats = drawn.rollouts.stats
    merged = merge_score_results(scores)
    merged.failures, merged.new_errors = drawn.scores.failures, drawn.scores.new_errors
    return Scored(rows, batch, merged)


@dataclass
class Filled:
    """What dynamic sampling made of a step: the B groups it trains on (``kept``), which of them are in
    the loss, every group it drew (``drawn``, for the step's rollout metrics) and its own metrics."""

    kept: Scored
    in_loss: list[bool]
    drawn: Scored
    metrics: dict[str, float]


def fill_informative(first: Scored, more: Callable[[int], Scored], max_rounds: int) -> Filled:
    """B informative groups (or as many as ``max_rounds`` extra rounds of ``more(round)`` find, the rest
    filled with uninformative ones)."""
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
    return Filled(select_groups(chosen), in_loss, concat_scored(rounds), metrics)


def group_loss_mask(in_loss: list[bool], group_size: int) -> torch.Tensor:
    return torch.tensor(in_loss, dtype=torch.bool).repeat_interleave(group_size)
