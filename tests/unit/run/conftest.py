from __future__ import annotations

import pytest

from grpo_ray.config import load_config


@pytest.fixture
def make_cfg(tmp_path):
    """A run config for the fake workers: B=4 prompts x G=2, two learners (overrides on top)."""

    def make(*overrides: str):
        return load_config(None, [
            "rollout.group_size=2", "trainer.prompts_per_step=4", "learner.num_learners=2", "learner.micro_batch_size=2",
            "trainer.steps=6", "trainer.save_every=0", "trainer.sinks=[jsonl]", "trainer.log_completions_every=0",
            "eval.enabled=false", f"trainer.output_dir={tmp_path / 'run'}", *overrides,
        ])

    return make
