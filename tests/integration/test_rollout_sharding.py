"""Several rollout workers share a step's prompts and produce exactly what one worker would.

Each prompt is sampled under its own seed, derived from its index in the whole step, so how the
prompts are split between workers changes nothing. Uses the transformers engine (cheap to start
twice); the vLLM engine takes the same seeds through ``SamplingParams(seed=...)``.
"""

from __future__ import annotations

import pytest

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import tiny_config

pytestmark = pytest.mark.integration


def rollout_of_step(tiny_model_dir, tmp_path, workers: int):
    overrides = [f"rollout.num_workers={workers}", "trainer.prompts_per_step=5", "learner.micro_batch_size=4"]
    cfg = tiny_config(tiny_model_dir, tmp_path, *overrides, engine="hf")
    trainer = GRPOTrainer(cfg)
    try:
        trainer.setup(learners=False)
        assert len(trainer.workers.rollouts) == workers
        rows = trainer.rollout.draw()
        return trainer.rollout.generate([r["prompt"] for r in rows], trainer.rollout.sampling(3), None)
    finally:
        trainer.shutdown()


def test_two_rollout_workers_equal_one(ray_cluster, tiny_model_dir, tmp_path):
    one = rollout_of_step(tiny_model_dir, tmp_path, 1)
    two = rollout_of_step(tiny_model_dir, tmp_path, 2)
    assert len(one) == 5 * 4 and one.group_size == 4
    assert two.completion_ids == one.completion_ids
    assert two.prompt_ids == one.prompt_ids
    flat = [x for row in one.sampling_logprobs for x in row]
    assert [x for row in two.sampling_logprobs for x in row] == pytest.approx(flat, abs=1e-5)
    # sampling really was random: completions of one prompt differ from each other
    assert len({tuple(c) for c in one.completion_ids[:4]}) > 1
