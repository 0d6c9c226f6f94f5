"""Colocation through the real loop on CPU: the rollout worker and the learner rank share one bundle,
the engine (transformers, full fine-tuning) sleeps at level 2 before every update, which frees its
weights, and the sync after the update wakes it and writes every weight again. The run equals the same
run with the roles apart, and the engine ends holding the learner's weights. (vLLM's sleep mode needs a
GPU: bench/gpu_check.sh checks it there; the GPU placement is tested in test_gpu_placement.py.)"""

from __future__ import annotations

import pytest
import ray

from grpo_ray.run.trainer import GRPOTrainer

from .helpers import engine_logprobs, tiny_config

pytestmark = pytest.mark.integration


def test_a_colocated_run_sleeps_its_engine_every_update_and_equals_the_run_apart(ray_cluster, tiny_model_dir, tmp_path):
    full = ("model.lora.enabled=false", "learner.lr=1e-3", "trainer.steps=2")
    colocated = GRPOTrainer(tiny_config(tiny_model_dir, tmp_path / "colocated", *full, "trainer.colocate=true",
                                        engine="hf")).setup()
    try:
        together = colocated.train()
        workers = colocated.workers
        assert ray.get(workers.rollouts[0].info.remote())["sleeps"] == 2  # once before each update
        assert workers.groups["learner"].pg.id == workers.groups["rollout"].pg.id  # the pair shares its bundle
        # the engine sampled every step from weights the sync wrote after it woke (a level-2 engine refuses to
        # sample from freed weights), and ends holding the learner's
        tok = colocated.tokenizer
        prompt = list(tok.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}], add_generation_prompt=True,
                                              return_dict=True)["input_ids"])
        completions = [tok.encode("<answer>\n42\n</answer>"), tok.encode("7")]
        in_engine = engine_logprobs(workers.rollouts[0], [prompt] * 2, completions)
        in_learner = ray.get(workers.learners[0].logprobs.remote([prompt] * 2, completions))
        for e, lp in zip(in_engine, in_learner):
            assert e == pytest.approx(lp, abs=1e-4)

        workers.stop_learners()
        apart = GRPOTrainer(tiny_config(tiny_model_dir, tmp_path / "apart", *full, engine="hf")).setup(workers=workers)
        alone = apart.train()
        assert ray.get(workers.rollouts[0].info.remote())["sleeps"] == 2  # no sleep without colocation
    finally:
        colocated.shutdown()
    for a, b in zip(together, alone):
        assert a["reward"] == b["reward"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert [h["timing/sleep"] > 0 for h in together] == [True] * 2 and "timing/sleep" not in alone[0]
