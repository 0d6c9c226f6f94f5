"""Single-turn generation: each trajectory is one assistant reply, sampled in one call."""

from __future__ import annotations

from grpo_ray.data.prompts import assistant_prefix
from grpo_ray.rollout.kinds.base import RolloutKind


class SingleTurn(RolloutKind):
    """The engine's completions as they are; the conversation is one assistant message holding the
    whole reply (an assistant prefix the prompt ends with, then the generated text), which is what
    rewards score, as TRL's GRPOTrainer does."""

    def rollout(self, engine, request, progress=False):
        batch = engine.generate(request, progress=progress)
        g = request.sampling.n
        prefixes = [assistant_prefix(prompt) for prompt in request.prompts for _ in range(g)]
        batch.completion_messages = [[{"role": "assistant", "content": prefix + text}]
                                     for prefix, text in zip(prefixes, batch.completion_texts)]
        return batch
