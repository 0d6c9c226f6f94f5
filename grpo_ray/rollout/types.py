"""What a rollout produces: groups of completions with their token ids, sampling logprobs,
finish reasons and the policy version that sampled them.

Plain lists, not tensors: these cross the Ray object store between rollout, reward and learner
actors, and the learner pads them into tensors itself (``grpo_ray.algo.batch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings shared by every engine."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 256
    seed: Optional[int] = None  # base seed; each prompt gets seed + its index so batches do not matter


@dataclass
class GenerationRequest:
    """B prompts as chat messages (TRL's conversational format) plus the data row they came from."""

    prompts: list[list[dict[str, str]]]
    sampling: SamplingConfig
    # one seed per prompt so that which worker or batch a prompt lands in changes nothing
    seeds: Optional[list[int]] = None


@dataclass
class RolloutBatch:
    """B prompts x G completions, completion rows laid out group by group (row i*G+j).

    Shapes in the comments: B prompts, G = group size, N = B*G completions, T_i tokens of row i.
    """

    prompt_ids: list[list[int]]  # [B][P_b]
    completion_ids: list[list[int]]  # [N][T_i]
    completion_texts: list[str]  # [N]
    sampling_logprobs: list[list[float]]  # [N][T_i] logprob of each sampled token under the sampler
    finish_reasons: list[str]  # [N] "stop" (EOS or stop string) or "length" (hit max_tokens)
    group_size: int
    policy_version: int  # adapter version that sampled every row; -1 means the bare base model
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_ids)

    def __len__(self) -> int:
        return len(self.completion_ids)

    def is_truncated(self) -> list[bool]:
        return [r == "length" for r in self.finish_reasons]

    def group_prompt_ids(self) -> list[list[int]]:
        """Prompt ids repeated per completion: [N][P]."""
        return [p for p in self.prompt_ids for _ in range(self.group_size)]

    @staticmethod
    def concat(parts: list["RolloutBatch"]) -> "RolloutBatch":
        """Join the shards that several rollout workers produced, in order."""
        if not parts:
            raise ValueError("no rollout shards to join")
        g = parts[0].group_size
        if any(p.group_size != g for p in parts):
            raise ValueError("rollout shards disagree on group_size")
        stats: dict[str, Any] = {}
        for p in parts:
            for k, val in p.stats.items():
                stats[k] = stats.get(k, 0.0) + val
        return RolloutBatch(
            prompt_ids=[x for p in parts for x in p.prompt_ids],
            completion_ids=[x for p in parts for x in p.completion_ids],
            completion_texts=[x for p in parts for x in p.completion_texts],
            sampling_logprobs=[x for p in parts for x in p.sampling_logprobs],
            finish_reasons=[x for p in parts for x in p.finish_reasons],
            group_size=g,
            policy_version=min(p.policy_version for p in parts),  # the oldest adapter in the batch
            stats=stats,
        )
