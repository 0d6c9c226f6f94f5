"""Shared pieces of the integration tests: configs for the tiny model and policy probes."""

from __future__ import annotations

from pathlib import Path

from grpo_ray.config import GRPOConfig, load_config

TOY_REWARD = f"{Path(__file__).with_name('toy_rewards.py')}:even_token_share"


def tiny_config(model_dir, output_dir, *overrides: str, engine: str = "vllm") -> GRPOConfig:
    """B=4 prompts x G=4 completions of at most 16 tokens on the tiny random model."""
    return load_config(
        None,
        [
            f"model.name_or_path={model_dir}",
            "model.dtype=float32",
            "model.lora.r=8",
            "model.lora.alpha=16",
            "model.lora.target_modules=all-linear",
            "data.source=arithmetic",
            "data.limit=64",
            "data.max_prompt_tokens=256",
            f"rollout.engine={engine}",
            "rollout.group_size=4",
            "rollout.max_completion_tokens=16",
            f"reward.functions=[{{name: '{TOY_REWARD}'}}]",
            "algo.beta=0.04",
            "learner.lr=0.03",
            "learner.micro_batch_size=8",
            "trainer.prompts_per_step=4",
            "trainer.steps=4",
            "trainer.save_every=0",
            "trainer.log_completions_every=0",
            "trainer.sinks=[jsonl]",
            f"trainer.output_dir={output_dir}",
            "eval.enabled=false",  # tests of held-out evaluation turn it on
            *overrides,
        ],
    )


def even_token_mass(trainer, learner_index: int = 0) -> float:
    """Probability, under the learner's current policy, that the completion of a training prompt
    starts with an even token id."""
    import math

    import ray

    from grpo_ray.rollout.prompting import encode_prompts

    tok = trainer.tokenizer
    prompt = encode_prompts(tok, [trainer.dataset[0]["prompt"]])[0]
    even = list(range(0, len(tok), 2))
    scores = ray.get(trainer.workers.learners[learner_index].score.remote([prompt] * len(even), [[t] for t in even]))
    return sum(math.exp(s[0]) for s in scores)
