"""The single-turn rollout kind on a stand-in engine: the trajectory is the engine's sample, and the
conversation rewards receive is the whole reply, an assistant prefix put back in front."""

from __future__ import annotations

import pytest

from grpo_ray.rollout.kinds import KindSpec, create_rollout_kind
from grpo_ray.utils.registry import UnknownNameError
from grpo_ray.wire import GenerationRequest, RolloutBatch, SamplingConfig

pytestmark = pytest.mark.unit


class Engine:
    def generate(self, request, progress=False):
        n = request.sampling.n
        texts = [f"t{i}.{j}" for i in range(len(request.prompts)) for j in range(n)]
        return RolloutBatch(prompt_ids=[[0]] * len(request.prompts), completion_ids=[[1, 2]] * len(texts),
                            completion_texts=texts, sampling_logprobs=[[-0.5, -0.5]] * len(texts),
                            finish_reasons=["stop"] * len(texts), group_size=n, policy_version=2)


def test_the_conversation_is_the_whole_reply_with_the_prefix() -> None:
    kind = create_rollout_kind(KindSpec("single_turn"))
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}, {"role": "assistant", "content": "<r>"}]]
    batch = kind.rollout(Engine(), GenerationRequest(prompts, SamplingConfig(n=2)))
    assert batch.conversations() == [[{"role": "assistant", "content": c}] for c in ["t0.0", "t0.1", "<r>t1.0", "<r>t1.1"]]
    assert batch.completion_texts[2] == "t1.0"  # the sampled text alone: the tokens the policy chose
    assert batch.final_texts()[3] == "<r>t1.1"


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown rollout kind 'multi'.*known: multi_turn, single_turn"):
        create_rollout_kind(KindSpec("multi"))
