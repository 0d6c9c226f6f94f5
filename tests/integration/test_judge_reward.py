"""A training run scored by an LM judge: ``lm_judge`` in reward.functions starts a JudgeWorker actor
(here the packaged builtin:arithmetic-base model, which needs no hub), warmed up before step 1, and
its P(yes) rewards vary between completions and reach the metrics and the completion tables under
the reward's display name."""

from __future__ import annotations

import json

import pytest
import ray

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import TOY_REWARD, tiny_config

pytestmark = pytest.mark.integration


def test_a_run_trains_on_lm_judge_rewards(ray_cluster, tiny_model_dir, tmp_path):
    cfg = tiny_config(
        tiny_model_dir, tmp_path, "trainer.steps=2", "trainer.log_completions_every=1",
        f"reward.functions=[{{name: lm_judge}}, {{name: '{TOY_REWARD}'}}]",
        "reward.judge.model=builtin:arithmetic-base", "reward.judge.num_cpus=1", "reward.timeout_s=60",
        engine="hf",
    )
    trainer = GRPOTrainer(cfg)
    try:
        trainer.setup()
        assert len(trainer.workers.judges) == 1
        # the reward worker's warm-up waited for the judge: it answers at once, model loaded
        assert ray.get(trainer.workers.judges[0].ready.remote(), timeout=5)["model"].endswith("arithmetic-base")
        history = trainer.train()
    finally:
        trainer.shutdown()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and len(history) == 2
    for row in rows:
        assert 0.0 < row["rewards/lm_judge/mean"] < 1.0
        assert row["rewards/lm_judge/std"] > 0.0, "the judge gave every completion of the step the same reward"
        assert "rewards/lm_judge/failures" not in row
        assert "rewards/toy_rewards.even_token_share/mean" in row  # a file reward's name has no folders
    samples = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    judged = [s["rewards/lm_judge"] for s in samples]
    assert judged and all(v is not None and 0.0 < v < 1.0 for v in judged)
